"""The transform registry: which function applies each action. Transforms (one file each) register themselves
here; :func:`~devicefit.compression.apply_policy` looks them up. Kept apart from ``apply`` so that transforms
and the apply loop do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .policy import Action

Transform = Callable[[nn.Module, str, nn.Module, Any], dict[str, Any]]
TRANSFORMS: dict[type[Action], Transform] = {}


class Skip(Exception):
    """Raised by a transform that does not apply to a layer; the reason is reported, the layer kept."""


def register_transform(action: type[Action]) -> Callable[[Transform], Transform]:
    """Register ``fn(root, module_name, module, action) -> details`` as the transform of ``action``."""

    def deco(fn: Transform) -> Transform:
        TRANSFORMS[action] = fn
        return fn

    return deco


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` of ``root`` was."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
