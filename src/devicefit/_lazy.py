"""Lazy exports: a package's names imported from its submodules on first access.

Every package of devicefit that would otherwise import torch, numpy or onnx at import time serves its
public names this way, so ``import devicefit`` and the command line's ``--help`` stay fast::

    __getattr__, __dir__ = lazy_exports(__name__, {"measure_latency": "measure", ...})
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``name`` comes from submodule ``exports[name]`` (relative, or
    absolute as ``"pkg.mod:attr"``), imported on first access and then kept as a plain attribute."""

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(import_module(module if ":" in target else f".{module}", package), attribute or name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
