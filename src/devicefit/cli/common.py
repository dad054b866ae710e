"""Helpers shared by the CLI modules: JSON output, the data-directory option, clean errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer

from ..errors import InputError

DataDirOption = typer.Option(
    None, "--data-dir", help="Folder of the public data (default: $DEVICEFIT_DATA).", show_default=False
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")

F = TypeVar("F", bound=Callable[..., Any])


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def clean_errors(func: F) -> F:
    """Turn the toolkit's input errors into a one-line message and exit code 2 (no traceback).

    Only :class:`devicefit.errors.InputError` (bad arch strings, files, names, sizes) and a missing file
    are input errors; anything else is a bug and keeps its traceback.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (InputError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
