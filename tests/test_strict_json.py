"""Strict JSON: what every store can keep is read as `json` reads it; the rest is refused."""

from __future__ import annotations

import json

import pytest

from listener.strict_json import loads_strict


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1}', b"[1.5, -2, 1e300]", b'["\\u00e9", "\\ud83d\\ude00", "\\n"]', b"null",
     "\ufeff[1]".encode(), '{"é": "☃"}'.encode()],
)  # fmt: skip
def test_storable_json_reads_as_json_does(body: bytes) -> None:
    assert loads_strict(body) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[NaN]", "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b"[1e400]", "too large"),
        (b'["\\ud800"]', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
        (b'["a\\u0000b"]', "NUL"),
        (b'{"k": {"\\u0000": []}}', "NUL"),
        (b"[\xed\xa0\x80]", "not UTF-8"),
        (b"{", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_what_a_store_cannot_keep_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        loads_strict(body)


def test_a_refusal_quotes_no_string_of_the_body() -> None:
    with pytest.raises(ValueError, match="NUL") as caught:
        loads_strict(b'{"password": "hunter2\\u0000"}')
    assert "hunter2" not in str(caught.value)
