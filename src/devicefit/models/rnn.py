"""LSTM and GRU classifiers of row-sequential MNIST: each 28-pixel row of the image is one time step.

The usual small recurrent benchmark of RNN compression: a 28x28 image is read as 28 steps of 28 inputs by one
``nn.LSTM`` or ``nn.GRU`` layer of 128 hidden units (batch first), and a linear layer classifies the last
hidden state. Built from the PyTorch modules so that ``rnn.weight_ih_l0`` (input matrix: 4x128 x 28 for the
LSTM, 3x128 x 28 for the GRU) and ``rnn.weight_hh_l0`` (recurrent matrix: 4x128 x 128, 3x128 x 128) are the
matrices low-rank and block pruning compress (ShrinkML, arXiv 1907.03540; RTMobile, arXiv 2002.11474).
Parameters: 82,186 (LSTM), 61,962 (GRU).

Inputs: (N, 1, 28, 28) MNIST images normalised like LeNet-5's (:data:`devicefit.models.lenet.INPUT_NORMALIZATION`);
an (N, 28, 28) tensor is accepted too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

CELLS = ("lstm", "gru")


class RowRNN(nn.Module):
    """A one-layer LSTM or GRU over the 28 image rows, classified from the last hidden state."""

    def __init__(self, cell: str = "lstm", hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        if cell not in CELLS:
            raise InputError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.cell = cell
        self.rnn: nn.Module = (nn.LSTM if cell == "lstm" else nn.GRU)(28, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
        return self.fc(out[:, -1])

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}"


def lstm_classifier() -> RowRNN:
    """The row-MNIST LSTM(128) classifier."""
    return RowRNN("lstm")


def gru_classifier() -> RowRNN:
    """The row-MNIST GRU(128) classifier."""
    return RowRNN("gru")
