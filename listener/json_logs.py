"""Log lines as JSON: one object a line, for log pipelines that parse rather than grep.

Each object holds the time (UTC, ISO 8601), the level, the logger, the message and the
structured fields the listener already attaches to its records (`source`, `delivery_id`,
`run_id`, `outcome`, `http_status`, ...), plus the exception's type and traceback when
there is one. It carries what the text format carries and no more: messages and fields
are redacted where they are made (`listener.redaction`, the access log's token mask).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter"]

# What every LogRecord has; anything else on a record is a field the caller attached.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _plain(value: Any) -> Any:
    """`value` if JSON can hold it as it is, else its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = _plain(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
