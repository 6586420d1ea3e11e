"""The names of the metric's output maps φ, torch-free (the app offers them before torch loads; core/metric.py
defines each map under these names, in this order: the default first)."""

NAMES = ("sqrt_probs", "probs", "logits")
