"""Command line: `geodesic COMMAND …` or `python -m geodesic COMMAND …` (`--help` on each command).

Every option's default is read from the engine's config dataclasses (geodesic/infra/options.py); `sparsify` starts
from the benchmarked setting, `--preset literal` from the paper's algorithm as written.
"""

# One module per command, its options beside its handler: `add(sub)` makes the subcommand, `run(args)` runs it
# and returns the exit code. The option groups and the wiring they share are in common.py.

from __future__ import annotations

import argparse
import sys

from ..infra.backend import ClusterError
from ..store import cards, data
from . import damage, export, fetch_data, merge, recover, sequence, sparsify, sweep, train
from .common import finished
from .sparsify import config as sparsify_config

COMMANDS = (fetch_data, train, sparsify, damage, recover, merge, export, sweep, sequence)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geodesic", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (data.DataMissing, cards.CheckpointError, ValueError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:  # a layer the metric has no rule for, named
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the command could not read or write
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every finished step is kept in the run folder", file=sys.stderr)
        return 130


__all__ = ["main", "build_parser", "finished", "sparsify_config", "COMMANDS"]
