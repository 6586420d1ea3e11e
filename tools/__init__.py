"""Tooling that is neither the engine nor a benchmark: a local multi-node Ray cluster (ray_cluster), the shipped
example runs' generator (make_gallery), a real browser driving the app (appdriver, shared by the browser tests and
bench/bench_app.py). Run a tool from the repository root: `.venv/bin/python tools/make_gallery.py`."""
