"""What the pages offer to choose, from the engine's torch-free tables (no torch, no pandas: the first draw of a
page's controls): datasets, output maps, strategies, damage kinds, the sparsify presets as the Sparsify page's
widgets show them, a net's prunable groups and a slider over their count.
"""

from __future__ import annotations

from app.page import md
from geodesic.core.output_maps import NAMES as OUTPUT_MAPS  # noqa: F401 — the pages read them here
from geodesic.core.strategies import STRATEGIES  # noqa: F401
from geodesic.experiments.damage_kinds import KINDS as DAMAGE_KINDS  # noqa: F401
from geodesic.experiments.presets import NO_STEP_CAP, SPARSIFY_PRESETS  # noqa: F401 — the pages read it here
from geodesic.store import zoo_table
from geodesic.store.dataset_table import DATASETS  # noqa: F401

# the Sparsify page's presets by the label its radio shows (the first is the engine's default)
PRESET_LABELS = {"recommended": "benchmarked for lenet60", "literal": "the paper's algorithm (literal)"}


def preset_widgets(name: str) -> dict:
    """The settings of the engine's preset `name` as the Sparsify page's widgets take them: its SparsifyConfig
    fields and its path's, in one flat dict, and "engine" (the preset's name)."""
    fields = SPARSIFY_PRESETS[name]
    return {"engine": name, **{k: v for k, v in fields.items() if k != "path"}, **fields["path"]}


PRESETS = {PRESET_LABELS[name]: preset_widgets(name) for name in SPARSIFY_PRESETS}


def preset_config(label: str):
    """The engine's SparsifyConfig behind a preset of the page (imports the engine)."""
    from geodesic.experiments.sparsify import PRESETS as ENGINE_PRESETS

    return ENGINE_PRESETS[PRESETS[label]["engine"]]


def group_names(model_name: str, card: dict | None = None) -> list[str]:
    """Names of a net's prunable groups, as zoo.filter_groups names them ("conv1[0]", …): a zoo model's from
    geodesic.store.zoo_table, a user's own architecture's (the picker's card has "arch") from its loaded
    Checkpoint."""
    if card is not None and card.get("arch"):
        return list(card["group_names"])
    return zoo_table.group_names(model_name)


def count_slider(where, label: str, n: int, value: int, **kwargs) -> int:
    """A slider over 1 … n (a count of a net's prunable groups) starting at `value` (clipped into range); a caption
    instead when n < 2 (a slider needs two values: a user's net may have a single group)."""
    if n < 2:
        where.caption(md(f"{label}: {n} (the net has {n} prunable group{'s' if n != 1 else ''})"))
        return n
    return where.slider(label, 1, n, min(max(int(value), 1), n), **kwargs)
