"""MNIST models of the compression papers: LeNet-5 and row-sequential LSTM/GRU classifiers.

- :class:`LeNet5`: "LeNet-5-Caffe" (Caffe's MNIST example after LeCun et al. 1998), the network of Deep
  Compression (arXiv 1510.00149) and of joint pruning and quantization (arXiv 1910.05897): conv 5x5 20 ->
  max-pool 2 -> conv 5x5 50 -> max-pool 2 -> fc 500 -> ReLU -> fc 10; 431,080 parameters. (Caffe's model has
  no ReLU after the convolutions; neither has this one.)
- :class:`RowRNN`: each 28-pixel row of the image is one time step (28 steps of 28 inputs), one ``nn.LSTM``
  or ``nn.GRU`` layer of 128 hidden units, and a linear head on the last hidden state; its ``weight_ih_l0``
  and ``weight_hh_l0`` are the input and recurrent matrices that low-rank and block pruning compress
  (ShrinkML, arXiv 1907.03540; RTMobile, arXiv 2002.11474).

Inputs are MNIST images normalised with :data:`MNIST_MEAN` and :data:`MNIST_STD`, shape (N, 1, 28, 28).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class RowRNN(nn.Module):
    """A one-layer LSTM or GRU over the image rows, classified from the last hidden state."""

    def __init__(self, cell: str = "lstm", hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.cell = cell
        self.rnn: nn.Module = (nn.LSTM if cell == "lstm" else nn.GRU)(28, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
        return self.fc(out[:, -1])
