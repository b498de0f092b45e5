"""`ConsoleSettings`: whether the operator console is served, and with which tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MIN_TOKEN_LENGTH", "ConsoleSettings"]

# A token an operator types or pastes; shorter ones are guessable over the network.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """`[console]`: `read_token` lets its holder read every page, `admin_token` also take
    actions (replays, reprocessing). With neither, `/ui` is not mounted at all.

    `refresh` is the seconds between a page's live refreshes; `page_size` the rows a page
    lists; `session_hours` how long a login lasts."""

    read_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    refresh: float = 5.0
    page_size: int = 50
    session_hours: float = 12.0

    def __post_init__(self) -> None:
        for name in ("read_token", "admin_token"):
            value = getattr(self, name)
            if value is not None and len(value) < MIN_TOKEN_LENGTH:
                raise ValueError(f"{name} must be at least {MIN_TOKEN_LENGTH} characters")
        if (
            self.read_token is not None
            and self.admin_token is not None
            and self.read_token == self.admin_token
        ):
            raise ValueError("read_token and admin_token must differ")
        if not self.refresh > 0:
            raise ValueError("refresh must be positive")
        if not 1 <= self.page_size <= 500:
            raise ValueError("page_size must be 1 to 500")
        if not self.session_hours > 0:
            raise ValueError("session_hours must be positive")

    @property
    def enabled(self) -> bool:
        return self.read_token is not None or self.admin_token is not None

    def __repr__(self) -> str:
        return (
            f"ConsoleSettings(read_token={'<hidden>' if self.read_token else None}, "
            f"admin_token={'<hidden>' if self.admin_token else None}, "
            f"refresh={self.refresh:g}, page_size={self.page_size}, "
            f"session_hours={self.session_hours:g})"
        )
