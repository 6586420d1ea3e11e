"""The damages experiments.damage applies, torch-free: the app draws them before torch loads.

    KINDS   zero: a fraction of the weights set to 0; ablate: whole filters set to 0; noise: Gaussian noise added
    AMONG   which filters `ablate` chooses from: all of them, or only those not already at zero
"""

KINDS = ("zero", "ablate", "noise")
AMONG = ("all", "alive")
