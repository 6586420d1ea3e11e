"""How many CPU threads the engine's torch computations use: one policy for the CLI, the library and the app.

Default: one thread per run. On the 2 shared cores of bench/results/threads.md, two threads gained at most a
fifth when nothing else ran (the exact solve at J 320×20,000; a lenet60 path step was 1.7× slower) but were
4× (solve) and 16× (step) slower than one thread as soon as busy processes competed for the cores, while one
thread slowed down by about the load's fair share (3–4×); a load-average rule would have picked one thread at
every sample of that run anyway, from a one-minute-old average, for a process that then runs for minutes.
On a dedicated many-core machine set `$GEODESIC_THREADS` (or pass a count) to use more.
`$GEODESIC_THREADS` overrides the default; an explicit count (the CLI's --threads, a library caller) wins
over both. The BLAS behind the exact solver's syrk (scipy's, via threadpoolctl in metric.gram) follows
torch's count on every call, so torch.set_num_threads is the only setting to make.
"""

from __future__ import annotations

import os

import torch

from .allocator import keep_freed_memory

ENV = "GEODESIC_THREADS"
DEFAULT = 1


def _check(value: object, source: str) -> int:
    """value itself if it is an int >= 1 (bool excluded), else ValueError naming `source`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source} must be a whole number of threads >= 1, got {value!r}")
    return value


def default() -> int:
    """The count `configure()` applies without an argument: $GEODESIC_THREADS when set (and not empty),
    else DEFAULT. For help texts, e.g. f"torch CPU threads (default {threads.default()})"."""
    env = os.environ.get(ENV, "").strip()
    if not env:
        return DEFAULT
    if not (env.isascii() and env.isdigit()):  # digits only: no sign, no decimal point, no unit
        raise ValueError(f"${ENV} must be a whole number of threads >= 1, got {env!r}")
    return _check(int(env), f"${ENV}")


def resolve(threads: int | None = None) -> int:
    """The count to use, without applying it: `threads` if given, else default()."""
    return default() if threads is None else _check(threads, "threads")


def configure(threads: int | None = None) -> int:
    """Apply the thread policy to this process and return the count: torch.set_num_threads(resolve(threads)),
    and the engine's allocator policy (geodesic.infra.allocator: freed memory kept for the next step).

    threads: an explicit count >= 1, which wins; None: $GEODESIC_THREADS, else DEFAULT.
    Raises ValueError for a count < 1 or not a whole number (argument or environment variable).
    """
    n = resolve(threads)
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


__all__ = ["ENV", "DEFAULT", "default", "resolve", "configure"]
