"""The pure helpers both store backends share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.store import SchemaTooNew
from listener.store._common import (
    check_schema_version,
    decode_cursor,
    encode_cursor,
)


@given(key=st.floats(allow_nan=False, allow_infinity=False), tie=st.text())
def test_cursors_round_trip(key: float, tie: str) -> None:
    assert decode_cursor("runs", encode_cursor("runs", key, tie), (float, str)) == [key, tie]


@given(junk=st.text())
def test_junk_is_never_a_cursor(junk: str) -> None:
    try:
        decode_cursor("calls", junk, (int,))
    except ValueError:
        return
    # The rare text that decodes must really be a calls cursor.
    assert junk.rstrip("=") == encode_cursor("calls", decode_cursor("calls", junk, (int,))[0])


def test_a_cursor_of_another_listing_is_refused() -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor("events", encode_cursor("calls", 3), (int,))
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor("calls", encode_cursor("calls", "3"), (int,))


def test_schema_version_check() -> None:
    check_schema_version(0, 1, "db")
    check_schema_version(1, 1, "db")
    with pytest.raises(SchemaTooNew, match="version 2"):
        check_schema_version(2, 1, "db")
