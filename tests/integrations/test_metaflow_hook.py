"""The exit hook's own choices: when it sends nothing, and how long it may take.

Its deliveries from real flows are covered by tests/providers/test_metaflow.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from listener.integrations.metaflow import notify
from listener.providers.metaflow.environment import (
    DEFAULT_WEBHOOK_TIMEOUT,
    run_environment,
    webhook_timeout,
)


def test_without_a_target_the_hook_sends_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LISTENER_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("LISTENER_WEBHOOK_SECRET", "whsec_c2VjcmV0")
    notify(run=None)
    out = capsys.readouterr().out
    assert "nothing reported" in out
    assert "c2VjcmV0" not in out


def test_without_a_run_the_hook_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LISTENER_WEBHOOK_URL", "http://127.0.0.1:9/hooks/metaflow")
    monkeypatch.setenv("LISTENER_WEBHOOK_SECRET", "whsec_c2VjcmV0")
    notify()
    assert "no run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0.5", 0.5), ("10", 10.0), ("soon", DEFAULT_WEBHOOK_TIMEOUT), ("0", DEFAULT_WEBHOOK_TIMEOUT)],
)
def test_the_delivery_budget_is_read_from_the_environment(value: str, seconds: float) -> None:
    assert webhook_timeout({"LISTENER_WEBHOOK_TIMEOUT": value}) == seconds


def test_a_run_gets_a_target_only_with_both_url_and_secret() -> None:
    both = run_environment(application="f.py", callback_url="http://h/hooks/m", secret="whsec_x")
    assert both["LISTENER_WEBHOOK_URL"] == "http://h/hooks/m"
    no_secret = run_environment(application="f.py", callback_url="http://h/hooks/m", secret=None)
    assert no_secret["LISTENER_WEBHOOK_URL"] == no_secret["LISTENER_WEBHOOK_SECRET"] == ""


def test_the_hook_imports_none_of_the_service() -> None:
    # Metaflow starts a Python process per hook at each run end; the service's modules
    # (app, receiver, store, Starlette) would add their import time to every report.
    probe = (
        "import sys, listener.integrations.metaflow;"
        "print(sorted(m for m in sys.modules if m in"
        " {'listener.app', 'listener.receiver', 'listener.store', 'starlette'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
