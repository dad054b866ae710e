"""Helpers shared by the CLI modules: JSON output, the data-directory option, clean errors.

Errors the user can fix come out as one line on stderr, ``error: ...``, and exit code 2: the toolkit's
:class:`~devicefit.errors.InputError` (through :func:`clean_errors`) and the command line's own usage
errors (an unknown option, ``--repeats 0`` below its minimum, a value outside a choice; through
:class:`OneLineErrorsGroup`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from ..errors import InputError

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef]

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


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (one line) on stderr and exit with code 2."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(2)


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
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


class OneLineErrorsGroup(TyperGroup):
    """The ``devicefit`` group: a usage error (unknown option or command, a value out of range or not one of
    the choices) is printed as ``error: <what click says> (see 'devicefit CMD --help')`` and exit code 2,
    like an input error, instead of a usage block and a framed panel."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            _one_line(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _one_line(exc)


def _one_line(exc: Any) -> NoReturn:
    if isinstance(exc, NoArgsIsHelpError):  # `devicefit` alone prints the help
        raise exc
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    fail(f"{exc.format_message()}{where}")
