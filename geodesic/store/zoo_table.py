"""The zoo's nets as a table, torch-free (store.zoo builds them; tests/test_zoo_table.py checks this table
against the built nets): the app draws its controls from it before torch loads, and a run folder's snapshots
are checked against it (store.runs.snapshot_problem) without building a net.

    PRUNABLE_GROUPS[name]  the net's prunable groups, layer by layer: (layer, units), where `layer` names the
                           coupled channel group as core.groups names it ("conv1+layer1.conv2": channels tied by
                           a residual addition) and `units` is its number of filters or neurons
    WEIGHT_COUNTS[name]    n, the length of the net's flat weight vector
"""

PRUNABLE_GROUPS: dict[str, tuple[tuple[str, int], ...]] = {
    "mlp": (("fc1", 32),),
    "mlp100": (("fc1", 100), ("fc2", 100)),
    "lenet60": (("conv1", 20), ("conv2", 40)),
    "resnet8": (("conv1+layer1.conv2", 16), ("layer1.conv1", 16), ("layer2.conv1", 32),
                ("layer2.conv2+layer2.shortcut.0", 32), ("layer3.conv1", 64), ("layer3.conv2+layer3.shortcut.0", 64)),
}
WEIGHT_COUNTS: dict[str, int] = {"mlp": 25_450, "mlp100": 89_610, "lenet60": 85_670, "resnet8": 77_754}


def group_names(name: str) -> list[str]:
    """The names of a zoo net's prunable groups in zoo.filter_groups' order: "conv1[0]", "conv1[1]", …"""
    return [f"{layer}[{i}]" for layer, units in PRUNABLE_GROUPS[name] for i in range(units)]
