"""What the experiments can be asked for, torch-free (the CLI's defaults and the app's controls come from here
before torch loads): a sweep's methods (experiments/methods.py), a task sequence's methods (continual.py) and the
sequences offered by default (store/tasks.py), and each sequence's memory."""

SWEEP_METHODS = ("geodesic", "magnitude", "finetune", "distill", "fip")
SEQUENCE_METHODS = ("finetune", "joint", "ewc", "si", "lwf", "replay", "agem", "geodesic")
SEQUENCES = ("split-mnist", "permuted-mnist:10", "mnist,fashion-mnist")

# Images kept per earlier task by every method that keeps any, per kind of sequence (the memory curves,
# bench/results/sequence-*-memory.md): on permuted-MNIST 1,000 (its geodesic forgets half as much as at 100 for the
# same CPU: BWT −0.019 against −0.043, seed 0); on split-MNIST 100 (at 1,000 the class scenario's geodesic can no
# longer learn the last pair of digits, and replay pulls ahead).
MEMORY = {"permuted-mnist": 1000}
DEFAULT_MEMORY = 100


def family(spec: str) -> str:
    """The kind of sequence `spec` names: "permuted-mnist", "split-mnist", or "datasets" (a list of datasets)."""
    text = spec.strip().lower()
    return "permuted-mnist" if text.startswith("permuted-mnist") else text if text == "split-mnist" else "datasets"


def memory_for(spec: str) -> int:
    """The default memory M of the sequence `spec` (MEMORY, else DEFAULT_MEMORY)."""
    return MEMORY.get(family(spec), DEFAULT_MEMORY)
