"""The HTTP access log without credentials: per-run callback URLs carry their run's token
in the path (`/hooks/{source}/{token}`), and an access line must not hand it on."""

from __future__ import annotations

import logging
from typing import Final

from listener.sources import mask_token

__all__ = ["ACCESS_LOGGER", "MaskTokens", "install"]

ACCESS_LOGGER: Final = "uvicorn.access"


class MaskTokens(logging.Filter):
    """Masks callback tokens in a record's message and string arguments (uvicorn's access
    lines pass the path as an argument); the record is always kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_token(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_token(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put `MaskTokens` on uvicorn's access logger (or `logger`), once."""
    target = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, MaskTokens) for existing in target.filters):
        target.addFilter(MaskTokens())
