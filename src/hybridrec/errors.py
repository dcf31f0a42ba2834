"""The exceptions hybridrec raises for problems a user can fix.

Every error carries a one-line message that names the problem (file, column, line, value),
so the CLI and the API can show it as it is, never as a traceback from inside a library.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "HybridrecError",
    "IntegrityError",
    "NotFittedError",
    "StoreConflictError",
    "UnknownIdError",
]


class HybridrecError(Exception):
    """Base class: a problem with the user's input, config or environment."""


class DataError(HybridrecError, ValueError):
    """Input data is missing, malformed or inconsistent (names file, column, line, value)."""


class ConfigError(HybridrecError, ValueError):
    """A config file or argument is invalid (names the key and the accepted values)."""


class UnknownIdError(HybridrecError, KeyError):
    """A user or item id is not known to the model or the dataset."""

    def __init__(self, kind: str, ids: list[object], *, hint: str = "") -> None:
        shown = ", ".join(repr(i) for i in ids[:5])
        more = f" (+{len(ids) - 5} more)" if len(ids) > 5 else ""
        msg = f"unknown {kind} id{'s' if len(ids) > 1 else ''}: {shown}{more}"
        super().__init__(msg + (f"; {hint}" if hint else ""))
        self.kind = kind
        self.ids = ids

    def __str__(self) -> str:
        # KeyError would quote the message; we want it verbatim.
        return str(self.args[0])


class IntegrityError(DataError):
    """A stored artifact does not match the hash its manifest recorded (never unpickled)."""


class StoreConflictError(DataError):
    """A model store changed under a request that expected another state.

    For instance a rollback that expected a current version another rollback replaced.
    """


class NotFittedError(HybridrecError, RuntimeError):
    """A model was asked to recommend before `fit` (or `load`)."""
