"""Shared fixtures: the public data directory (skip with a reason when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# `make test` runs two pytest workers on two cores: one intra-op thread each avoids oversubscription
# (OpenMP threads spinning against each other made some tests 50x slower on a loaded machine).
torch.set_num_threads(1)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_root() -> Path | None:
    raw = os.environ.get("DEVICEFIT_DATA") or (str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    return Path(raw) if raw and Path(raw).is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("public data directory not found: set DEVICEFIT_DATA to the shared data folder")
    return root


def need_file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.is_file():
        pytest.skip(f"data file {relative} not in {root}")
    return path


@pytest.fixture(scope="session")
def nb201_table(data_root: Path):
    from devicefit.data import load_nb201_table

    return load_nb201_table(need_file(data_root, "nb201/nb201_accuracy.csv"))
