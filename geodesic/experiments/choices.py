"""What the experiments can be asked for, torch-free (the CLI's defaults and the app's controls come from here
before torch loads): a sweep's methods (experiments/methods.py), a task sequence's methods (continual.py) and the
sequences offered by default (store/tasks.py), and each sequence's memory."""

from ..store.task_kinds import family  # torch-free

SWEEP_METHODS = ("geodesic", "magnitude", "finetune", "distill", "fip")
SEQUENCE_METHODS = ("finetune", "joint", "ewc", "si", "lwf", "replay", "agem", "geodesic")
SEQUENCES = ("split-mnist", "permuted-mnist:10", "mnist,fashion-mnist")

# Images kept per earlier task by every method that keeps any, per kind of sequence, chosen by measurement
# (docs/results.md#task-sequences): on permuted-MNIST 1,000, where the geodesic forgets half as much as at 100 for
# the same CPU (seed 0: BWT −0.0193 against −0.0427, ACC 0.9054 against 0.8844); elsewhere 100, where split-MNIST's
# class scenario has the geodesic ahead of replay (bench/results/sequence-split-mnist-memory-decay.md: at 1,000 the
# geodesic can no longer learn the last pair of digits within its budget, 0.6322, and replay pulls ahead).
MEMORY = {"permuted-mnist": 1000}
DEFAULT_MEMORY = 100


def memory_for(spec: str) -> int:
    """The default memory M of the sequence `spec` (MEMORY, else DEFAULT_MEMORY)."""
    return MEMORY.get(family(spec), DEFAULT_MEMORY)
