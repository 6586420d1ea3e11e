"""Run every benchmark; each prints its table and writes bench/results/<name>.md and .csv (docs/results.md links them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECOMMENDED = "recommended (the default): balanced, ε=0.1, β=0.001, pull ρ=2 + relax for the budget from ε=0.3"
SCRIPTS = [
    ["bench_checkpoints.py"],
    ["bench_tangent.py"],
    ["bench_step.py"],
    ["bench_metric.py"],
    ["bench_threads.py"],
    ["bench_app.py"],
    ["bench_sparsify.py", "--dataset", "fashion-mnist"],
    ["bench_sparsify.py", "--dataset", "mnist", "--variants", "literal (β=0.01, ε=0.01, no pull);pull ρ=2 + relax 100;"
     f"balanced, ε=0.1, β=0.001, pull ρ=2 + relax 200 from ε=0.3;{RECOMMENDED}"],
    ["bench_sparsify.py", "--model", "resnet8", "--dataset", "fashion-mnist", "--fraction", "0.5", "--variants",
     "balanced, ε=0.1, β=0.001, pull ρ=2 + relax 200 from ε=0.3;"
     "balanced, ε=0.01, β=0.001, pull ρ=2 + relax 200 from ε=0.3",
     "--max-steps", "400", "--baselines", "2"],
    ["bench_budget.py"],
    ["bench_linearity.py"],
    ["bench_recal.py"],
    ["bench_export.py"],
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
