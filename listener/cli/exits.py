"""Exit codes, and the one place an exception that ended a command is mapped onto one.

0 ok; 1 the operation failed (a run that did not succeed under `--wait`, a platform error,
a delivery answered with an error); 2 usage or configuration error; 3 store unavailable;
4 not found; 124 timed out; 130 interrupted.
"""

from __future__ import annotations

from listener.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An expected failure: its message is shown as is and `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def classify(exc: Exception) -> tuple[int, str]:
    """The exit status and one-line message for an exception that ended a command."""
    from listener.client import RunNotFound, WaitTimeout
    from listener.providers.base import ProviderError
    from listener.store.base import StoreError

    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, StoreError):
        return EXIT_STORE, f"error: store unavailable: {exc}"
    if isinstance(exc, RunNotFound):
        return EXIT_NOT_FOUND, f"error: {exc}"
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT, f"error: {exc}"
    if isinstance(exc, ProviderError):
        return EXIT_FAILED, f"error: the platform call failed: {exc}"
    return EXIT_FAILED, f"error: {type(exc).__name__}: {exc}"
