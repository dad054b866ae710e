"""Models from outside devicefit: a user's model file loaded safely, and checks of what a model accepts.

Names are imported on first use (module ``__getattr__``): ``import devicefit.models`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .files import (
        MODEL_FILE_KINDS,
        STATE_DICT_KEYS,
        check_model_input,
        load_model_file,
        model_file_kind,
        proxy_limitation,
    )

_EXPORTS: dict[str, str] = {
    "MODEL_FILE_KINDS": "files",
    "STATE_DICT_KEYS": "files",
    "check_model_input": "files",
    "load_model_file": "files",
    "model_file_kind": "files",
    "proxy_limitation": "files",
}

__all__ = [
    "MODEL_FILE_KINDS",
    "STATE_DICT_KEYS",
    "check_model_input",
    "load_model_file",
    "model_file_kind",
    "proxy_limitation",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (keeps ``import devicefit.models`` light)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
