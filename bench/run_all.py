"""Run every benchmark (they print their tables and write bench/results/), then refresh README.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["bench_checkpoints.py"],
    ["bench_tangent.py"],
    ["bench_step.py"],
    ["bench_app.py"],
    ["bench_sparsify.py", "--dataset", "fashion-mnist"],
    ["bench_sparsify.py", "--dataset", "mnist", "--variants", "literal (β=0.01, ε=0.01, no pull);pull ρ=2 + relax 100;"
     "balanced, ε=0.1, β=0.001, pull ρ=2 + relax 200 from ε=0.3;balanced, ε=0.1, β=0.001, pull ρ=2 + relax 600 from ε=0.3"],
    ["bench_damage.py", "--dataset", "fashion-mnist"],
    ["bench_damage.py", "--dataset", "mnist"],
    ["bench_recovery.py", "--seeds", "0,1"],
    ["bench_merge.py"],
]


def main() -> int:
    for script in SCRIPTS:
        print(f"== {' '.join(script)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script[0]), *script[1:]]).returncode:
            return 1
    return subprocess.run([sys.executable, str(HERE / "report.py")]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
