"""The engine's torch-free tables (what the app draws before torch loads) against the engine itself: the zoo's
groups and weight counts against the built nets, the strategies and damage kinds, the sparsify presets."""

import subprocess
import sys
from pathlib import Path

import pytest

from geodesic.core.path import PathConfig
from geodesic.experiments import damage, presets, sparsify
from geodesic.store import zoo, zoo_table

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_the_zoo_table_is_the_built_nets(name):
    model = zoo.build(name)
    groups = zoo.filter_groups(model)
    assert zoo_table.group_names(name) == [g.name for g in groups]
    units = {}  # a group's name is "<layer>[<unit>]"
    for g in groups:
        layer = g.name.rsplit("[", 1)[0]
        units[layer] = units.get(layer, 0) + 1
    assert zoo_table.PRUNABLE_GROUPS[name] == tuple(units.items())
    assert zoo_table.WEIGHT_COUNTS[name] == sum(p.numel() for p in model.parameters())


def test_the_zoo_table_lists_the_zoo():
    assert set(zoo_table.PRUNABLE_GROUPS) == set(zoo_table.WEIGHT_COUNTS) == set(zoo.ZOO)


def test_the_engine_uses_the_tables():
    from geodesic.core import strategies, targets

    assert targets.STRATEGIES is strategies.STRATEGIES and sparsify.STRATEGIES is strategies.STRATEGIES
    assert damage.KINDS == ("zero", "ablate", "noise") and damage.AMONG == ("all", "alive")
    assert list(sparsify.PRESETS) == list(presets.SPARSIFY_PRESETS)


def test_the_presets_are_the_engines_configs():
    """recommended is the default config; literal the paper's algorithm (no pull, no relaxation, a fixed ε)."""
    assert sparsify.PRESETS["recommended"] == sparsify.SparsifyConfig()
    from geodesic.core.path import MAX_STEPS
    from geodesic.experiments.presets import NO_STEP_CAP

    assert NO_STEP_CAP == MAX_STEPS  # the recommended walk has no step cap: its budget ends it
    assert sparsify.PRESETS["literal"] == sparsify.SparsifyConfig(strategy="norm", pull=0.0, relax_steps=0,
                                                                 path=PathConfig(adaptive=False))
    for cfg in sparsify.PRESETS.values():
        cfg.validate()


def test_the_tables_import_neither_torch_nor_pandas():
    code = ("import sys; import geodesic.store.zoo_table, geodesic.core.strategies, geodesic.experiments.presets, "
            "geodesic.experiments.damage_kinds; print(sorted({'torch', 'pandas'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_output_map_and_dataset_names_are_the_engines():
    from geodesic.core import metric, output_maps
    from geodesic.store import data, dataset_table

    assert set(output_maps.NAMES) == set(metric.OUTPUT_MAPS) and output_maps.NAMES[0] == "sqrt_probs"
    assert data.FOLDERS is dataset_table.FOLDERS and dataset_table.DATASETS == ("mnist", "fashion-mnist")
