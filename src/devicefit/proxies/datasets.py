"""The data sets proxies are computed on (no heavy imports: the CLI lists them in ``--help``)."""

from __future__ import annotations

IMAGE_SOURCES = ("npz", "jpeg")
DATASETS = ("cifar10", "cifar100", "imagenet16")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16": 120}
#: The NB201 accuracy column each dataset's proxies are ranked against by default. The published figures
#: (reference notebook) use NB201's ``cifar10-valid`` test accuracy for CIFAR-10 (``c10valid_test_200ep``,
#: trained on the train split only) and the test accuracy for ImageNet16-120 (not in our table).
TRUTH_COLUMN = {"cifar10": "c10_test_200ep", "cifar100": "c100_test_200ep", "imagenet16": "in16_val_200ep"}
DEFAULT_BATCH_SIZE = 64
