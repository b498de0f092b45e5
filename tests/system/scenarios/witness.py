"""Watching for secrets where they must never be: logs and the `/metrics` page.

A `Witness` is handed to the scenarios. They register every secret they make (webhook
secrets, API keys, callback secrets and tokens, database passwords), it records the
signature headers that reached the receiver (through a thin ASGI wrapper, so what is
checked is what was really sent), and it keeps the `/metrics` pages the scenarios fetched
and the headers stored with unroutable deliveries.
`capture_all_logs` collects every record of every logger at DEBUG meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["KEY_PREFIXES", "LogCapture", "Witness", "capture_all_logs"]

# Key material must never be written anywhere, whatever follows the prefix.
KEY_PREFIXES = ("whsec_", "whsk_")
# Pieces of a signature header shorter than this are formats and timestamps, not MACs.
_MIN_SIGNATURE_PIECE = 16
_SIGNATURE_HEADER = re.compile(r"(^|-)signature(-256)?$")
_LABELLED = re.compile(r"[A-Za-z0-9]{1,10}=(.+)")
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclass(slots=True)
class Witness:
    """The secrets of a test run and the places they might leak to."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> label
    signatures: set[str] = field(default_factory=set)
    metrics_pages: list[str] = field(default_factory=list)
    # Headers the store kept with unroutable deliveries (the CLI prints them).
    unroutable_headers: list[str] = field(default_factory=list)

    def secret(self, label: str, value: str) -> str:
        """Register `value` (and the key material after a `whsec_`-style prefix)."""
        self.secrets[value] = label
        prefix, underscore, material = value.partition("_")
        if underscore and prefix.startswith("wh") and len(material) >= _MIN_SIGNATURE_PIECE:
            self.secrets[material] = f"{label} (key material)"
        return value

    def signature_header(self, value: str) -> None:
        """Remember a signature header's value and each MAC inside it."""
        if len(value) >= _MIN_SIGNATURE_PIECE:
            self.signatures.add(value)
        for piece in re.split(r"[\s,;]+", value):
            # `t=...`, `v1=<hex>`, `sha256=<hex>`: the value; base64 (maybe `=`-padded) whole.
            labelled = _LABELLED.fullmatch(piece)
            candidate = labelled.group(1) if labelled else piece
            if len(candidate) >= _MIN_SIGNATURE_PIECE:
                self.signatures.add(candidate)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app`, recording the signature headers of every request it receives."""

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                for raw_name, raw_value in scope["headers"]:
                    if _SIGNATURE_HEADER.search(raw_name.decode("latin-1").lower()):
                        self.signature_header(raw_value.decode("latin-1"))
            await app(scope, receive, send)

        return recording

    def leaks(self, text: str) -> list[str]:
        """What of the forbidden material appears in `text`, by label (never the value)."""
        found = [f"key prefix {prefix!r}" for prefix in KEY_PREFIXES if prefix in text]
        found += sorted({label for value, label in self.secrets.items() if value in text})
        leaked_signatures = sum(1 for value in self.signatures if value in text)
        if leaked_signatures:
            found.append(f"{leaked_signatures} received signature values")
        return found


class LogCapture(logging.Handler):
    """Keeps every record as the full text a log pipeline could write out."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.loggers: set[str] = set()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.name, record.levelname, record.getMessage()]
        except Exception as exc:  # a broken %-format must not hide what the record holds
            parts = [record.name, record.levelname, str(record.msg), repr(record.args), repr(exc)]
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        # Structured fields (`extra=`) reach JSON log pipelines verbatim: check them too.
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS:
                parts.append(f"{key}={value!r}")
        self.lines.append(" | ".join(parts))
        self.loggers.add(record.name)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def capture_all_logs() -> Iterator[LogCapture]:
    """Every logger at DEBUG into one `LogCapture`, restored afterwards.

    The root logger takes the handler; loggers that set their own level are opened to
    DEBUG, disabled ones enabled, and those that do not propagate get the handler too.
    """
    capture = LogCapture()
    root = logging.getLogger()
    saved: list[tuple[logging.Logger, int, bool, bool]] = []
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        saved.append((logger, logger.level, logger.disabled, not logger.propagate))
        if logger.level not in (logging.NOTSET, logging.DEBUG):
            logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if not logger.propagate:
            logger.addHandler(capture)
    root_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(root_level)
        for logger, level, disabled, attached in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            if attached:
                logger.removeHandler(capture)
