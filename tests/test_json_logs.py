"""Log records as JSON lines (`listener/json_logs.py`)."""

from __future__ import annotations

import json
import logging
import sys

from listener.json_logs import JsonFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("listener.receiver", logging.WARNING, "x.py", 1, message, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_record_is_one_json_object_with_its_fields() -> None:
    line = JsonFormatter().format(
        record("delivery source=%s outcome=%s", "std", "rejected", source="std", http_status=401)
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "listener.receiver"
    assert entry["message"] == "delivery source=std outcome=rejected"
    assert (entry["source"], entry["http_status"]) == ("std", 401)
    assert entry["time"].endswith("+00:00")
    # The record's own machinery stays out.
    assert "args" not in entry
    assert "msg" not in entry


def test_a_field_json_cannot_hold_is_its_text_and_an_exception_is_kept() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", run_id=("a", 1))
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["run_id"] == "('a', 1)"
    assert entry["exc_type"] == "ValueError"
    assert entry["traceback"].endswith("ValueError: boom")
