"""Who is asking: a bearer token, or a session cookie issued at login; and the CSRF token
an action must carry. Pure functions over the settings and the request's strings.

The cookie never holds a token: it is `role.issued.nonce.mac`, the mac an HMAC keyed by the
role's token, so a session dies when its token is rotated and a stolen cookie does not
reveal the token. The CSRF token is an HMAC of the session's nonce under the same key, so
it is tied to one session and needs no server-side state (several workers agree on it).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from listener.console.settings import ConsoleSettings

__all__ = [
    "COOKIE_NAME",
    "Role",
    "Session",
    "from_bearer",
    "from_cookie",
    "issue",
    "login",
]

COOKIE_NAME = "listener_console"


class Role(enum.StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated caller. `csrf` is None for a bearer-token caller: a browser never
    adds that header on its own, so a forged request cannot carry it."""

    role: Role
    label: str  # who, in the audit: the role and a short session id, never the token
    csrf: str | None

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def csrf_ok(self, given: str | None) -> bool:
        if self.csrf is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def _token(settings: ConsoleSettings, role: Role) -> str | None:
    return settings.admin_token if role is Role.ADMIN else settings.read_token


def _mac(key: str, *parts: str) -> str:
    return hmac.new(key.encode(), "|".join(parts).encode(), hashlib.sha256).hexdigest()


def _match(settings: ConsoleSettings, given: str) -> Role | None:
    """The role whose token `given` is; both are compared, in constant time."""
    found = None
    for role in (Role.ADMIN, Role.READ):
        token = _token(settings, role)
        if token is not None and hmac.compare_digest(given.encode(), token.encode()):
            found = found or role
    return found


def from_bearer(settings: ConsoleSettings, authorization: str) -> Session | None:
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    role = _match(settings, given.strip())
    return Session(role=role, label=f"{role.value} (bearer)", csrf=None) if role else None


def issue(settings: ConsoleSettings, role: Role, now: float, nonce: str | None = None) -> str:
    """A new session cookie's value for `role`."""
    token = _token(settings, role)
    if token is None:
        raise ValueError(f"no {role.value} token is configured")
    nonce = nonce or secrets.token_hex(16)
    issued = str(int(now))
    return ".".join((role.value, issued, nonce, _mac(token, "session", role.value, issued, nonce)))


def login(settings: ConsoleSettings, given: str, now: float) -> str | None:
    """The cookie for a login with the token `given`, None when it is no token."""
    role = _match(settings, given)
    return issue(settings, role, now) if role is not None else None


def from_cookie(settings: ConsoleSettings, value: str, now: float) -> Session | None:
    parts = value.split(".")
    if len(parts) != 4:
        return None
    role_word, issued, nonce, mac = parts
    try:
        role = Role(role_word)
        at = int(issued)
    except ValueError:
        return None
    token = _token(settings, role)
    if token is None or not nonce:
        return None
    expected = _mac(token, "session", role.value, issued, nonce)
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    if not at <= now + 60 or now - at > settings.session_hours * 3600:
        return None
    return Session(role=role, label=f"{role.value} ({nonce[:8]})", csrf=_mac(token, "csrf", nonce))
