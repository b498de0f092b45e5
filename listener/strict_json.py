"""JSON as every store can keep it: no NaN or infinities, no lone surrogates, no NUL.

Python's `json` reads all of these, but PostgreSQL's `jsonb` refuses NaN, infinities and
`\\u0000`, and no UTF-8 encoder writes a lone surrogate. A webhook body holding one would
fail at the commit, be answered 503 and be retried by its sender forever; read strictly,
it is refused up front with a reason and kept as unroutable, the same on every backend.
Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

__all__ = ["loads_strict"]

# Only an escape (`\\u...`) can put a lone surrogate or a NUL into a string of valid
# UTF-8 JSON: bodies without one skip the walk over every string.
_MAYBE_UNSTORABLE = re.compile(rb"\\u")
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON can store")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large to store")
    return number


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def loads_strict(body: bytes) -> Any:
    """The JSON document in `body`; `ValueError` (with a reason that quotes no string of
    the body) when it is not JSON or holds a value a store cannot keep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    text = text.removeprefix("\ufeff")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError:
        raise ValueError("the body is not JSON") from None
    if _MAYBE_UNSTORABLE.search(body):
        _check_strings(value)
    return value


def _check_strings(value: Any) -> None:
    # Iterative, so a deeply nested body cannot exhaust the stack here.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                pending.append(inner)
        elif isinstance(item, list):
            pending.extend(item)


def _check_text(text: str) -> None:
    found = _UNSTORABLE_CHAR.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise ValueError("a string holds a NUL character (\\u0000)")
    raise ValueError("a string holds a lone surrogate")
