"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016, arXiv 1512.03385, Section 4.2), as in
akamaster/pytorch_resnet_cifar10, whose pretrained weights the data directory holds.

Three stages of ``n`` basic blocks (16, 32, 64 channels; depth 6n + 2), and option-A shortcuts: where a block
halves the resolution and doubles the channels, the shortcut subsamples the input (``x[:, :, ::2, ::2]``)
and pads it with zero channels on both sides. Here that shortcut is a named module (:class:`PadShortcut`)
rather than a lambda, so the model pickles, exports to ONNX and is traced by Torch-Pruning; it has no
weights, so the pretrained state dicts load unchanged. Inputs are normalised with :data:`CIFAR_MEAN` and
:data:`CIFAR_STD` (the reference's ImageNet statistics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Per-channel input normalisation of the pretrained models (RGB, pixels scaled to 0..1).
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
#: Blocks per stage of each depth.
DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


class PadShortcut(nn.Module):
    """Option A: take every other pixel and pad ``pad`` zero channels on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """ResNet-``depth`` for 32x32 inputs, depth in 20, 32, 44, 56, 110."""
    if depth not in DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    return CifarResNet(DEPTHS[depth], num_classes)
