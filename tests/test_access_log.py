"""The access log filter: callback tokens never reach an access line."""

from __future__ import annotations

import logging

from uvicorn.logging import AccessFormatter

from listener import access_log
from listener.access_log import MaskTokens
from listener.sources import callback_token

TOKEN = callback_token("a-callback-secret", "nonce1")


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's h11 and httptools protocols log a response."""
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:50000", "POST", path, "1.1", 202),
        None,
    )


def test_the_token_in_an_access_line_is_masked() -> None:
    record = access_record(f"/hooks/cb/{TOKEN}?attempt=2")
    assert MaskTokens().filter(record) is True
    line = record.getMessage()
    assert TOKEN not in line
    assert line == '127.0.0.1:50000 - "POST /hooks/cb/***?attempt=2 HTTP/1.1" 202'


def test_uvicorns_access_formatter_still_reads_the_masked_record() -> None:
    record = access_record(f"/listener/hooks/cb/{TOKEN}")
    MaskTokens().filter(record)
    line = AccessFormatter("%(request_line)s %(status_code)s", use_colors=False).format(record)
    assert line == "POST /listener/hooks/cb/*** HTTP/1.1 202 Accepted"


def test_other_paths_and_values_are_left_as_they_are() -> None:
    record = access_record("/hooks/nextmv")
    MaskTokens().filter(record)
    assert record.args == ("127.0.0.1:50000", "POST", "/hooks/nextmv", "1.1", 202)


def test_a_token_already_in_the_message_is_masked() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, f"POST /hooks/cb/{TOKEN}", None, None
    )
    MaskTokens().filter(record)
    assert record.getMessage() == "POST /hooks/cb/***"


def test_install_puts_one_filter_on_the_access_logger() -> None:
    logger = logging.getLogger("test_access_log.install")
    access_log.install(logger)
    access_log.install(logger)
    assert [type(each) for each in logger.filters] == [MaskTokens]
    access_log.install()
    assert any(isinstance(each, MaskTokens) for each in logging.getLogger("uvicorn.access").filters)
