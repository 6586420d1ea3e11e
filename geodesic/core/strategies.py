"""The strategies that choose which groups a sparsify run zeroes (core.targets.choose_groups), torch-free: the
app draws them before torch loads.

    norm        smallest layer-normalized norm |w_g| / mean_{g' in layer(g)} |w_g'|
    importance  smallest functional importance |J_g w_g| on a probe batch (the outputs' change, to first order)
    balanced    the same fraction of every layer, smallest norm within each
    random      seeded
"""

STRATEGIES = ("norm", "importance", "balanced", "random")
