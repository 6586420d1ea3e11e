"""What a task sequence can be asked for, torch-free (the app draws its controls from it before torch loads):
the methods of experiments/continual.py and the sequences of store/tasks.py as offered by default."""

METHODS = ("finetune", "joint", "ewc", "si", "lwf", "replay", "agem", "geodesic")
SEQUENCES = ("split-mnist", "permuted-mnist:10", "mnist,fashion-mnist")
