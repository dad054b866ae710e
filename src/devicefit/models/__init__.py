"""Models from outside devicefit: a user's model file loaded safely, and checks of what a model accepts.

Names are imported on first use (module ``__getattr__``): ``import devicefit.models`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
