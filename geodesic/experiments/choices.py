"""What the experiments can be asked for, torch-free (the CLI's defaults and the app's controls come from here
before torch loads): a sweep's methods (experiments/methods.py), a task sequence's methods (continual.py) and the
sequences offered by default (store/tasks.py)."""

SWEEP_METHODS = ("geodesic", "magnitude", "finetune", "distill", "fip")
SEQUENCE_METHODS = ("finetune", "joint", "ewc", "si", "lwf", "replay", "agem", "geodesic")
SEQUENCES = ("split-mnist", "permuted-mnist:10", "mnist,fashion-mnist")
