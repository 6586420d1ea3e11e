"""The model zoo: build a net by name and list its filter groups.

Models take float images in [0, 1] of shape (B, 1, 28, 28) and normalize inside.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.params import Group


class Normalize(nn.Module):
    """(x − mean) / std with fixed constants (no parameters)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """784 → 32 → 10, ReLU: tiny, for tests and teaching (25,450 weights; its 32 hidden neurons are its groups)."""

    prunable = ("fc1",)

    def __init__(self, hidden: int = 32):
        super().__init__()
        # background pixels stay 0: centred inputs (mostly −1) leave whole ReLU units dead for every image
        self.norm = Normalize(0.0, 0.5)
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.norm(x).flatten(1))))


class MLP100(nn.Module):
    """784 → 100 → 100 → 10, ReLU: the fully connected net of the continual-learning benchmarks on permuted MNIST
    (Gradient Projection Memory, Saha et al. 2021, and the methods it compares with): 89,610 weights; its groups are
    the 200 hidden neurons."""

    prunable = ("fc1", "fc2")

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.norm = Normalize(0.0, 0.5)  # as MLP: background pixels stay 0
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(self.norm(x).flatten(1)))
        return self.fc3(torch.relu(self.fc2(h)))


class LeNet60(nn.Module):
    """conv 1→20 5×5, pool, conv 20→40 5×5, pool, fc 640→100, fc 100→10: 60 conv filters, 85,670 weights."""

    prunable = ("conv1", "conv2")

    def __init__(self):
        super().__init__()
        self.norm = Normalize(0.5, 0.5)  # [0, 1] -> [-1, 1]
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 40, 5)
        self.fc1 = nn.Linear(40 * 4 * 4, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(pool(self.conv1(self.norm(x))))
        x = torch.relu(pool(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def pool(x: torch.Tensor) -> torch.Tensor:
    """2×2 max-pool. relu(pool(x)) = pool(relu(x)) as relu is monotone, on a quarter of the values; the
    channels-last copy makes CPU max-pooling about 4× faster than on NCHW (19 → 5 ms for 256×20×24×24)."""
    # channels-last strides by permute + contiguous, which vmap (the reference Jacobian) also supports
    return torch.max_pool2d(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), 2)


class BasicBlock(nn.Module):
    """conv 3×3 → BN → ReLU → conv 3×3 → BN, plus the input (a 1×1 conv + BN when the shape changes), → ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet8(nn.Module):
    """A CIFAR-style ResNet for 1×28×28: conv 3×3 (16) + BN, three stages of one BasicBlock (16, 32, 64 channels,
    strides 1, 2, 2), global average pool, fc 64→10: BatchNorm and skip connections, 77,754 weights."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.norm = Normalize(0.5, 0.5)
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = BasicBlock(widths[0], widths[0], 1)
        self.layer2 = BasicBlock(widths[0], widths[1], 2)
        self.layer3 = BasicBlock(widths[1], widths[2], 2)
        self.fc = nn.Linear(widths[2], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(self.norm(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


ZOO: dict[str, type[nn.Module]] = {"mlp": MLP, "mlp100": MLP100, "lenet60": LeNet60, "resnet8": ResNet8}


def build(name: str, seed: int | None = None) -> nn.Module:
    """A fresh model of the zoo; `seed` fixes the initialization."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {sorted(ZOO)}")
    if seed is not None:
        torch.manual_seed(seed)
    return ZOO[name]()


def filter_groups(model: nn.Module) -> list[Group]:
    """The prunable units of a model: coupled channel groups (groups.coupled_groups): a conv filter with its bias,
    the BatchNorm γ/β after it and the channels tied to it by residual additions. For mlp and lenet60 (no
    BatchNorm, no skips) these are exactly their hidden neurons / conv filters, in the same order and names."""
    from ..core.groups import coupled_groups

    return coupled_groups(model)
