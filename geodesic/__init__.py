"""Geodesic Explorer: move trained networks along short paths of the functional metric.

Implements Raghavan & Thomson, "Sparsifying networks by traversing geodesics". The engine is pure torch;
the Streamlit app, the CLI (`python -m geodesic`) and the benchmarks all call this package. Its layers, each
importing only the ones listed before it:

    infra/        plumbing: files, threads, the run lifecycle, progress, command options, Ray
    core/         the math: parameters and groups, the metric, the tangent, the self-checking step, the path
    store/        what lives on disk: datasets, the model zoo, checkpoints and cards, run folders, exports
    experiments/  what a user runs: sparsify, damage and recovery, merge, baselines, sweeps and fronts
    cli/          the `geodesic` command
"""

from ._moved import install as _install_moved

__version__ = "0.1.0"

_install_moved()
