"""A residual net of 4.8 M weights for 1×28×28 images, written as a user would bring it (`--arch
bench/archs/resnet5m.py:resnet5m`): a 3×3 stem (64 channels) and three BasicBlocks (128, 256, 512 channels), each
halving the resolution (28 → 14 → 7 → 4), so that most weights sit at small resolutions: 0.15 G multiply-adds
per image, a tenth of a ResNet-18 at this input size. BatchNorm after every convolution, 1×1 projections on the
skip connections, global average pooling, fc 512 → 10.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet5M(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(*(Block(a, b, 2) for a, b in zip(widths, widths[1:])))
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.bn(self.stem((x - 0.5) / 0.5))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet5m() -> nn.Module:
    return ResNet5M()
