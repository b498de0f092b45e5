from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from helpers import event

from handlers import log as log_plugin


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("LISTENER_HANDLER_LOG_LEVEL", "LISTENER_HANDLER_LOG_LOGGER"):
        monkeypatch.delenv(name, raising=False)
    log_plugin.configure({})
    yield
    log_plugin.configure({})


async def test_logs_every_transition(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="listener.handlers.log")
    assert log_plugin.handlers.match(event(status="queued")) == ["handlers.log.log_transition"]
    await log_plugin.log_transition(event("run-7", "failed"))
    [record] = caplog.records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert message.startswith("run run-7 failed provider=local application=routing")
    assert "origin=webhook key=tr_" in message


async def test_level_and_logger_from_configure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log_plugin.configure({"level": "warning", "logger": "ops.runs"})
    await log_plugin.log_transition(event())
    [record] = caplog.records
    assert (record.name, record.levelno) == ("ops.runs", logging.WARNING)


async def test_level_from_environment(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="listener.handlers.log")
    monkeypatch.setenv("LISTENER_HANDLER_LOG_LEVEL", "DEBUG")
    await log_plugin.log_transition(event())
    assert caplog.records[0].levelno == logging.DEBUG


async def test_unknown_level_fails_the_call() -> None:
    log_plugin.configure({"level": "LOUD"})
    with pytest.raises(ValueError, match="LOUD"):
        await log_plugin.log_transition(event())
