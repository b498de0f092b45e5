"""Exceptions that end a command map onto exit codes and one-line messages."""

from __future__ import annotations

import pytest

from listener.cli.exits import classify
from listener.client import RunNotFound, WaitTimeout
from listener.config import ConfigError
from listener.errors import CommandError
from listener.providers.base import ProviderError
from listener.store.base import StoreUnavailable


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (CommandError("error: x", 4), 4, "error: x"),
        (ConfigError("f.toml: a.b: expected c"), 2, "f.toml: a.b: expected c"),
        (StoreUnavailable("down"), 3, "error: store unavailable: down"),
        (RunNotFound("no run 'r'"), 4, "error: no run 'r'"),
        (WaitTimeout("late"), 124, "error: late"),
        (
            ProviderError("503 from platform"),
            1,
            "error: the platform call failed: 503 from platform",
        ),
        (RuntimeError("boom"), 1, "error: RuntimeError: boom"),
    ],
)
def test_exceptions_map_to_exit_codes(exc: Exception, code: int, message: str) -> None:
    assert classify(exc) == (code, message)
