"""What every scheme offers (`SignatureScheme`) and what a verification returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, init=False)
class Verified:
    """What a successful verification learned: the delivery id and when it was signed."""

    msg_id: str | None
    timestamp: int | None  # Unix seconds

    def __init__(self, msg_id: str | None, timestamp: int | None) -> None:
        # The generated frozen __init__ goes through object.__setattr__ per field, which cost
        # about a tenth of a whole verification; setting the slots directly does not.
        _set_msg_id(self, msg_id)
        _set_timestamp(self, timestamp)


_set_msg_id: Callable[[Verified, str | None], None] = Verified.__dict__["msg_id"].__set__
_set_timestamp: Callable[[Verified, int | None], None] = Verified.__dict__["timestamp"].__set__


@runtime_checkable
class SignatureScheme(Protocol):
    """What every scheme offers; the receiver holds one per source."""

    name: str

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> Verified: ...

    def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]: ...
