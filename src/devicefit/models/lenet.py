"""LeNet-5 for MNIST, the "LeNet-5-Caffe" variant of the compression papers.

LeCun et al. 1998's network as Caffe's MNIST example defines it, and as Deep Compression (Han et al., arXiv
1510.00149) and joint pruning and quantization (arXiv 1910.05897) use it: conv 5x5, 20 channels -> max-pool 2 ->
conv 5x5, 50 channels -> max-pool 2 -> fc 500 -> ReLU -> fc 10; 431,080 parameters (Deep Compression's "431K").
Like Caffe's model it has no non-linearity after the convolutions (only after fc 500), and no padding: 28x28
inputs shrink to 24, 12, 8, 4, so fc 500 sees 50 x 4 x 4 = 800 features.

Inputs: (N, 1, 28, 28) MNIST pixels scaled to 0..1 and normalised with :data:`INPUT_NORMALIZATION`
(mean 0.1307, std 0.3081), the normalisation of the MNIST data in :mod:`devicefit.models.evaluate`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The normalisation (a key of :data:`devicefit.data.images.NORMALIZATION`) of the MNIST models' inputs.
INPUT_NORMALIZATION = "mnist"


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
