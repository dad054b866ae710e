"""The toolkit's error for bad input: what the user gave, and what was expected.

Every check of user input (arch strings, files, device names, sizes, budgets) raises :class:`InputError`
or a subclass, with a message that names the input. It is a ``ValueError``, so ``except ValueError``
catches it too; the CLI turns exactly these into a one-line message and exit code 2, and lets any other
exception (a bug) show its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a malformed value, an impossible setting, or a file that is not what it should be."""


class UnknownNameError(InputError, KeyError):
    """A name or key (device, column, cell) that is not there; also a ``KeyError`` for lookups."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(InputError, IndexError):
    """An index outside its range (an NB201 index, an enumeration position); also an ``IndexError``."""


__all__ = ["InputError", "OutOfRangeError", "UnknownNameError"]
