"""torchvision's own ResNet, brought as a user would bring it (`--arch bench/archs/tvresnet.py:tvresnet`):
`torchvision.models.resnet.ResNet` with one BasicBlock per stage (64, 128, 256, 512 channels; 4.9 M weights),
its stem taking the one channel of 28×28 images. Everything else is torchvision's: the 7×7 stride-2 stem, the max
pooling after it, BatchNorm after every convolution, 1×1 downsample projections on the skips, fc 512 → 10.
"""

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


def tvresnet() -> nn.Module:
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
