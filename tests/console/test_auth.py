"""Sessions, bearer tokens and CSRF tokens, as pure functions."""

from __future__ import annotations

import pytest

from listener.console.auth import Role, from_bearer, from_cookie, issue, login
from listener.console.settings import ConsoleSettings

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
SETTINGS = ConsoleSettings(read_token=READ, admin_token=ADMIN, session_hours=1)
NOW = 1_800_000_000.0


def test_a_bearer_token_gives_its_role_and_needs_no_csrf() -> None:
    admin = from_bearer(SETTINGS, f"Bearer {ADMIN}")
    read = from_bearer(SETTINGS, f"bearer {READ}")
    assert admin is not None
    assert admin.role is Role.ADMIN
    assert admin.csrf_ok(None)
    assert read is not None
    assert read.role is Role.READ
    assert not read.admin


@pytest.mark.parametrize("header", ["", "Bearer", f"Basic {ADMIN}", f"Bearer {ADMIN}x", "Bearer  "])
def test_anything_else_is_no_caller(header: str) -> None:
    assert from_bearer(SETTINGS, header) is None


def test_a_login_cookie_holds_no_token_and_reads_back() -> None:
    cookie = login(SETTINGS, ADMIN, NOW)
    assert cookie is not None
    assert ADMIN not in cookie
    assert READ not in cookie
    session = from_cookie(SETTINGS, cookie, NOW + 10)
    assert session is not None
    assert session.role is Role.ADMIN
    assert session.csrf is not None
    assert ADMIN not in session.label


def test_a_wrong_token_logs_no_one_in() -> None:
    assert login(SETTINGS, "admin-token-0123456789abcdeX", NOW) is None
    assert login(SETTINGS, "", NOW) is None


def test_a_forged_or_stale_cookie_is_refused() -> None:
    cookie = issue(SETTINGS, Role.READ, NOW, nonce="n" * 32)
    role, issued, nonce, mac = cookie.split(".")
    assert from_cookie(SETTINGS, ".".join(("admin", issued, nonce, mac)), NOW) is None
    assert from_cookie(SETTINGS, ".".join((role, str(int(NOW) + 1), nonce, mac)), NOW) is None
    assert from_cookie(SETTINGS, cookie + "0", NOW) is None
    assert from_cookie(SETTINGS, "garbage", NOW) is None
    assert from_cookie(SETTINGS, cookie, NOW + 3601) is None
    assert from_cookie(SETTINGS, cookie, NOW + 3599) is not None


def test_rotating_the_token_ends_its_sessions() -> None:
    cookie = issue(SETTINGS, Role.ADMIN, NOW)
    rotated = ConsoleSettings(read_token=READ, admin_token="admin-token-rotated-000000")
    assert from_cookie(rotated, cookie, NOW) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    one = from_cookie(SETTINGS, issue(SETTINGS, Role.ADMIN, NOW), NOW)
    two = from_cookie(SETTINGS, issue(SETTINGS, Role.ADMIN, NOW), NOW)
    assert one is not None
    assert two is not None
    assert one.csrf_ok(one.csrf)
    assert not one.csrf_ok(two.csrf)
    assert not one.csrf_ok(None)
    assert not one.csrf_ok("")


def test_a_role_without_a_token_gets_no_session() -> None:
    only_read = ConsoleSettings(read_token=READ)
    assert login(only_read, ADMIN, NOW) is None
    with pytest.raises(ValueError, match="admin"):
        issue(only_read, Role.ADMIN, NOW)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"read_token": "short"}, "at least 16"),
        ({"read_token": READ, "admin_token": READ}, "differ"),
        ({"read_token": READ, "refresh": 0}, "refresh"),
        ({"read_token": READ, "page_size": 0}, "page_size"),
    ],
)
def test_settings_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsoleSettings(**options)  # type: ignore[arg-type]


def test_settings_never_show_a_token() -> None:
    assert READ not in repr(SETTINGS)
    assert ADMIN not in repr(SETTINGS)
    assert not ConsoleSettings().enabled
    assert SETTINGS.enabled
