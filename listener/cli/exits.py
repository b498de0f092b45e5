"""The one place an exception that ended a command is mapped onto an exit status.

Every error the listener raises on purpose carries its exit code and its one-line message
(see `listener.errors`); anything else is a failure named by its type.
"""

from __future__ import annotations

from listener.errors import EXIT_FAILED, ListenerError

__all__ = ["classify"]


def classify(exc: Exception) -> tuple[int, str]:
    """The exit status and one-line message for an exception that ended a command."""
    if isinstance(exc, ListenerError):
        return exc.exit_code, exc.describe()
    return EXIT_FAILED, f"error: {type(exc).__name__}: {exc}"
