"""The NAS-Bench-201 CIFAR network as a ``torch.nn.Module``.

Follows the benchmark's ``TinyNetwork`` (D-X-Y/AutoDL-Projects, ``models/cell_searchs`` and
``models/cell_infers``; arXiv 2001.00326): a 3x3 stem convolution with BN, three stages of N cells
with C, 2C, 4C channels joined by residual reduction blocks, BN + ReLU, global average pooling and a
linear classifier. With C=16, N=5 the parameter count equals the benchmark's ``params_M``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .nb201 import EDGES, NONE, NUM_NODES, OPS, NB201Cell


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


def _edge_op(name: str, channels: int) -> nn.Module:
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise InputError(f"NB201 operation {name!r} has no module; expected one of {', '.join(OPS[1:])}")


class InferCell(nn.Module):
    """One cell: node j is the sum of op(i->j)(node i) over its non-``none`` incoming edges.

    ``none`` edges are left out (the reference multiplies by zero, which adds nothing); a node with no
    non-``none`` input is zero, as in the reference.
    """

    def __init__(self, cell: NB201Cell, channels: int) -> None:
        super().__init__()
        self.edges: list[tuple[int, int, str]] = []
        self.ops = nn.ModuleDict()
        for (src, dst), op in zip(EDGES, cell.ops):
            if op == NONE:
                continue
            key = f"{src}_{dst}"
            self.edges.append((src, dst, key))
            self.ops[key] = _edge_op(OPS[op], channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x] + [None] * (NUM_NODES - 1)
        for src, dst, key in self.edges:
            inp = nodes[src]
            if inp is None:
                inp = torch.zeros_like(x)
            y = self.ops[key](inp)
            nodes[dst] = y if nodes[dst] is None else nodes[dst] + y
        out = nodes[-1]
        return torch.zeros_like(x) if out is None else out


class ResNetBasicBlock(nn.Module):
    """Reduction block between stages: two ReLU-Conv-BN (first with stride 2) + avg-pool/1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    def __init__(self, cell: NB201Cell, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10) -> None:
        super().__init__()
        if channels < 1 or cells_per_stage < 1 or num_classes < 1:
            raise InputError(
                f"NB201 network needs channels, cells_per_stage and num_classes >= 1, got "
                f"{channels}, {cells_per_stage}, {num_classes}"
            )
        self.cell = cell
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(c, 2 * c))
                c *= 2
            layers.extend(InferCell(cell, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"NB201 network input must have shape (N, 3, H, W), got {tuple(x.shape)}")
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(out).flatten(1))


def build_nb201(
    cell: NB201Cell | str, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10
) -> NB201Network:
    """Build the NB201 CIFAR network of ``cell`` (a cell or an arch string)."""
    if isinstance(cell, str):
        cell = NB201Cell.from_str(cell)
    return NB201Network(cell, channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes)
