"""Exceptions of the shared package.

The tree::

    TmiotError
    ├── ConfigError        a setting is invalid (``setting`` names it)
    ├── DatabaseError      the database refused or is unreachable (``retriable``)
    └── ServiceError       a local service would not start or answer (``service``)

Third-party exceptions are translated at the boundary (``raise ... from exc``),
so callers never catch psycopg or aiokafka errors.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DatabaseError", "ServiceError", "TmiotError", "leaves"]


class TmiotError(Exception):
    """Base of every error the pipeline raises on purpose."""

    retriable: bool = False


class ConfigError(TmiotError):
    """Invalid configuration; raised at start, before any connection is made."""

    def __init__(self, message: str, *, setting: str) -> None:
        """Keep the name of the (first) offending setting on the error."""
        super().__init__(message)
        self.setting = setting


class DatabaseError(TmiotError):
    """The database failed a request; ``retriable`` when trying again may help."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        """Mark whether the caller may retry."""
        super().__init__(message)
        self.retriable = retriable


class ServiceError(TmiotError):
    """A local service could not be started, reached or stopped."""

    def __init__(self, message: str, *, service: str) -> None:
        """Keep which service failed."""
        super().__init__(message)
        self.service = service


def leaves(error: BaseException) -> list[BaseException]:
    """The leaf exceptions of (possibly nested) exception groups, in order.

    TaskGroups wrap what their tasks raise; callers want the original errors.

    >>> leaves(ExceptionGroup("g", [ValueError(1), ExceptionGroup("h", [KeyError(2)])]))
    [ValueError(1), KeyError(2)]
    """
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
