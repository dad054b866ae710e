"""The ``devicefit`` command: one sub-command per job, thin over the Python API.

Each job's commands live in their own module here and register themselves on :data:`app`. Those
modules import typer and light devicefit modules only at the top: torch, scipy and pandas are imported
inside the commands that need them, so ``devicefit --help`` and ``devicefit space nb201`` start at once.
"""

from __future__ import annotations

import typer

from .common import OneLineErrorsGroup

app = typer.Typer(
    name="devicefit",
    help="Fit neural networks to devices: architecture search under device budgets, compression of trained "
    "models, hardware cost, zero-cost proxies, latency predictors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=OneLineErrorsGroup,
)

# Importing registers the commands (order = order in --help).
from . import compress as _compress  # noqa: E402,F401
from . import demo as _demo  # noqa: E402,F401
from . import foundation as _foundation  # noqa: E402,F401
from . import predictor as _predictor  # noqa: E402,F401
from . import proxies as _proxies  # noqa: E402,F401
from . import report as _report  # noqa: E402,F401
from . import search as _search  # noqa: E402,F401
from . import space as _space  # noqa: E402,F401


def main() -> None:
    app()
