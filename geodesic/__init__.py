"""Geodesic Explorer: move trained networks along short paths of the functional metric.

Implements Raghavan & Thomson, "Sparsifying networks by traversing geodesics". The engine is pure torch;
the Streamlit app, the CLI (`python -m geodesic`) and the benchmarks all call this package.
"""

__version__ = "0.1.0"
