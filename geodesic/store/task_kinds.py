"""The kinds of task sequence a spec can name, torch-free (the app's controls and the CLI's defaults read them
before torch loads; store/tasks.py builds the tasks)."""


def family(spec: str) -> str:
    """The kind of sequence `spec` names: "permuted-mnist", "split-mnist", or "datasets" (a list of datasets)."""
    text = spec.strip().lower()
    return "permuted-mnist" if text.startswith("permuted-mnist") else text if text == "split-mnist" else "datasets"
