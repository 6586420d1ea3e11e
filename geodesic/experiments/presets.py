"""The sparsify presets, torch-free: experiments.sparsify builds its PRESETS (SparsifyConfig objects) from these,
and the app fills in its Sparsify page's settings from them before torch loads.

Each preset gives every setting of the method a user chooses: SparsifyConfig's fields, and its path's
(PathConfig) under "path". What a preset leaves out (how many filters, the path's snapshot counts) takes the
dataclasses' defaults. The first preset is the default: "recommended" is SparsifyConfig() (the benchmarked
setting, bench/results/sparsify-*.md); "literal" is the paper's algorithm as written (no pull, no relaxation, the
norm strategy, a fixed ε).
"""

NO_STEP_CAP = 10_000_000  # a walk's max_steps that never binds (core.path.MAX_STEPS): the CPU budget ends the walk


SPARSIFY_PRESETS: dict[str, dict] = {
    "recommended": {"strategy": "balanced", "pull": 2.0, "relax_steps": None, "relax_eps": 0.3,
                    "relax_eps_final": 0.002, "seconds": 900.0,
                    "path": {"phi": "sqrt_probs", "beta": 0.001, "eps": 0.1, "probe": 32, "seed": 0,
                             "adaptive": True, "max_steps": NO_STEP_CAP}},
    "literal": {"strategy": "norm", "pull": 0.0, "relax_steps": 0, "relax_eps": 0.3,
                "relax_eps_final": 0.002, "seconds": 900.0,
                "path": {"phi": "sqrt_probs", "beta": 0.01, "eps": 0.01, "probe": 32, "seed": 0,
                         "adaptive": False, "max_steps": 400}},
}
