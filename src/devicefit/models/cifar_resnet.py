"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016, arXiv 1512.03385, Section 4.2), exactly the architecture of
akamaster/pytorch_resnet_cifar10, whose pretrained weights the data directory holds.

A 3x3 convolution of 16 channels, three stages of ``n`` basic blocks (16, 32, 64 channels; depth 6n + 2), global
average pooling and a linear classifier; weights initialised as in the reference (Kaiming-normal convolution and
linear weights). Option-A shortcuts: where a block halves the resolution and doubles the channels, the shortcut
subsamples the input (``x[:, :, ::2, ::2]``) and pads ``planes // 4`` zero channels on each side. Here that
shortcut is a named module, :class:`PadShortcut`, rather than the reference's lambda, so the model pickles,
deep-copies, exports to ONNX and can be recognised by channel pruning; it has no weights, so the reference's
state dicts load unchanged (key for key, shape for shape).

Channel coupling, for pruning. In a block with an identity shortcut, ``conv2``'s output channel ``c`` is added to
the block input's channel ``c``: every ``conv2`` of a stage, the stage's input and the ``conv1`` input channels
of its blocks form one coupled group. In the first block of stages 2 and 3 the residual add is ``bn2(conv2(.))
+ pad(x)``: output channels ``pad .. pad + C_in - 1`` are coupled with the previous stage's channels ``0 ..
C_in - 1`` (the input channel ``c`` lands on output ``c + pad``), the ``2 * pad`` outer channels are added to
zeros and couple with nothing before the block. So the shortcut separates the stages' groups, but with an
offset: removing input channel ``c`` of the previous stage removes output channel ``c + pad`` here, and the pad
widths change unless the removed channels are symmetric. Torch-Pruning's ``DependencyGraph`` does not know a
channel padding; it treats the unknown operation as element-wise (one index to one index), which is wrong here
because the padding changes the channel count: on this model as it is, Torch-Pruning 1.6.1 puts all three
stages in one group and maps channel 20 of stage 2 to channel 20 of the 16-channel stage 1.
:func:`devicefit.compression.analysis.convert_pad_shortcuts` rewrites each :class:`PadShortcut` as the equal
channel gather, which it can prune.

Inputs are RGB pixels scaled to 0..1 and normalised with :data:`CIFAR_MEAN` and :data:`CIFAR_STD` (the
reference's ImageNet statistics, ``NORMALIZATION["imagenet"]`` of :mod:`devicefit.data.images`); the data of
:mod:`devicefit.models.evaluate` use :data:`INPUT_NORMALIZATION`, so data and models agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import NORMALIZATION
from ..errors import InputError

#: The normalisation (a key of :data:`devicefit.data.images.NORMALIZATION`) the CIFAR ResNets expect.
INPUT_NORMALIZATION = "imagenet"
CIFAR_MEAN, CIFAR_STD = NORMALIZATION[INPUT_NORMALIZATION]
#: Blocks per stage of each depth.
DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


class PadShortcut(nn.Module):
    """Option A: take every other pixel and pad ``pad`` zero channels on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 CIFAR images, ``blocks_per_stage`` = n."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for s in [stride] + [1] * (blocks_per_stage - 1):
                blocks.append(BasicBlock(planes, width, s))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # the reference's _weights_init
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """ResNet-``depth`` for 32x32 inputs, depth in 20, 32, 44, 56, 110."""
    if depth not in DEPTHS:
        raise InputError(f"CIFAR ResNet depth must be one of {', '.join(map(str, DEPTHS))}, got {depth!r}")
    return CifarResNet(DEPTHS[depth], num_classes)
