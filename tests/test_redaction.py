"""One redaction rule, and every place that shows a store URL held to it.

The surfaces test puts a PostgreSQL URL carrying one password in its user part and another
in its query string through each place that shows a store URL (a `Config` repr, the demo
banner, log lines at DEBUG, the command's `--json` output and its error messages with and
without `--debug`, store errors) and searches all of it for either password.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner

from listener.cli import main
from listener.config import ConfigError, load_config
from listener.demo import demo
from listener.redaction import (
    MASK,
    bare_url,
    is_secret_name,
    log_text,
    redact_headers,
    redact_settings,
    redact_url,
    scrub,
    url_secrets,
)
from listener.store import StoreUnavailable, open_store

USER_PASSWORD = "u-pw-5e1f"
QUERY_PASSWORD = "q-pw-93ac"


def with_passwords(url: str) -> str:
    """`url` with USER_PASSWORD in its user part and QUERY_PASSWORD as a query parameter.

    The local test server trusts loopback, so both are sent and neither is checked."""
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0] or 'postgres'}:{USER_PASSWORD}@{host}"
    query = [*urllib.parse.parse_qsl(parts.query), ("password", QUERY_PASSWORD)]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(query))
    )


def leaks(text: str) -> list[str]:
    return [secret for secret in (USER_PASSWORD, QUERY_PASSWORD) if secret in text]


# -- the pure functions -----------------------------------------------------------------


def test_bare_url_keeps_only_the_address() -> None:
    assert bare_url("https://me:pw@hooks.example:8443/in/cb?token=t#frag") == (
        "https://hooks.example:8443/in/cb"
    )
    assert bare_url("http://[::1]:9/x?sig=s") == "http://[::1]:9/x"
    assert bare_url("http://bad:port/x") == MASK


def test_urls_lose_their_passwords() -> None:
    url = "postgresql://me:p%40ss@db.example:5432/listener?sslmode=require&password=other"
    shown = redact_url(url)
    assert "p%40ss" not in shown
    assert "other" not in shown
    assert shown == "postgresql://me:***@db.example:5432/listener?sslmode=require&password=***"
    assert set(url_secrets(url)) == {"p%40ss", "p@ss", "other"}
    assert scrub("auth failed for p@ss", url_secrets(url)) == "auth failed for ***"
    assert redact_url("postgresql://me@db/x") == "postgresql://me@db/x"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_password_alone_or_with_a_user() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("postgresql://:s3cret@db/x") == "postgresql://:***@db/x"
    assert redact_url("sqlite:////var/lib/l.db") == "sqlite:////var/lib/l.db"


def test_every_credential_parameter_is_masked() -> None:
    url = (
        "https://bucket.example/in?X-Amz-Credential=AKIA1&X-Amz-Signature=ab12"
        "&sig=zz&api_key=k1&token=t1&sslpassword=s1&region=eu"
    )
    shown = redact_url(url)
    for secret in ("AKIA1", "ab12", "zz", "k1", "t1", "s1"):
        assert secret not in shown
    assert "region=eu" in shown
    assert set(url_secrets(url)) == {"AKIA1", "ab12", "zz", "k1", "t1", "s1"}


def test_a_url_without_credentials_is_returned_as_it_is() -> None:
    url = "https://api.example/v1/runs?page=2&status=running#top"
    assert redact_url(url) == url
    assert url_secrets(url) == []


def test_an_unreadable_url_is_not_echoed() -> None:
    assert redact_url("http://[::1") == "<unreadable URL>"
    assert url_secrets("http://[::1") == []


def test_a_password_with_an_at_sign_in_the_user_part() -> None:
    url = "postgresql://me:a@b@db/x"
    assert redact_url(url) == "postgresql://me:***@db/x"


def test_scrub_masks_the_longest_secret_first() -> None:
    # "abc" inside "abcdef" must not leave "def" behind.
    assert scrub("got abcdef and abc", ["abc", "abcdef", ""]) == "got *** and ***"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("X-API-Key", True),
        ("Cookie", True),
        ("webhook-signature", True),
        ("callback_secret", True),
        ("api_key", True),
        ("password", True),
        ("sig", True),
        ("content-type", False),
        ("user-agent", False),
        ("base_url", False),
        ("keep_alive", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_headers_with_credentials_are_left_out() -> None:
    headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer t"),
        ("X-Hub-Signature-256", "sha256=00"),
        ("x-api-key", "k"),
        # Credentials under names no deny-list would guess.
        ("X-Webhook-Password", "p"),
        ("X-Shopify-Hmac-Sha256", "mac"),
        ("X-Auth", "a"),
        ("X-Credentials", "c"),
        ("X-Session", "s"),
        ("Webhook-Id", "msg_1"),
    ]
    kept = {"content-type": "application/json", "Webhook-Id": "msg_1"}
    assert redact_headers(headers) == kept
    assert redact_headers(dict(headers)) == kept


def test_settings_mask_values_and_keep_references() -> None:
    settings = {
        "api_key": "literal-key",
        "secrets": ["env:WEBHOOK_SECRET", "whsec_literal"],
        "base_url": "https://me:pw@api.example/v1?token=t",
        "headers": {"Authorization": "Bearer b", "Accept": "application/json"},
        "timeout": 5.0,
        "callback_secret": "",
    }
    shown = redact_settings(settings)
    assert shown == {
        "api_key": MASK,
        "secrets": ["env:WEBHOOK_SECRET", MASK],
        "base_url": "https://me:***@api.example/v1?token=***",
        "headers": {"Authorization": MASK, "Accept": "application/json"},
        "timeout": 5.0,
        "callback_secret": "",
    }


# -- every surface that shows a store URL ------------------------------------------------


async def test_no_surface_shows_a_store_password(
    pg_schema_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = with_passwords(pg_schema_url)
    unreachable = with_passwords("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
    caplog.set_level(logging.DEBUG)
    shown: dict[str, str] = {}

    config_file = tmp_path / "listener.toml"
    public_url = with_passwords("https://hooks.example/listener")
    config_file.write_text(f'[listener]\nstore = "{url}"\npublic_url = "{public_url}"\n')
    config = load_config(config_file, env={})
    assert config.store == url  # the real URL is kept for connecting
    shown["repr(Config)"] = repr(config)
    shown["str(Config)"] = str(config)

    # A value the loader refuses is echoed in its error: redacted too.
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text(f'[listener]\npublic_url = "{url}"\n')
    with pytest.raises(ConfigError) as refused_config:
        load_config(bad_file, env={})
    shown["config error"] = str(refused_config.value)
    assert "postgresql://postgres:***@" in shown["config error"]

    banner: list[str] = []
    result = await demo(runs=2, seed=3, out=banner.append, store_url=url)
    assert result.exit_code == 0, banner
    shown["demo banner"] = "\n".join(banner)
    assert "***" in shown["demo banner"]

    store = await open_store(url)
    try:
        shown["store.url"] = store.url
        shown["repr(store)"] = repr(store)
    finally:
        await store.close()

    with pytest.raises(StoreUnavailable) as refused:
        await open_store(unreachable)
    shown["store error"] = str(refused.value)

    runner = CliRunner()
    # The command runs its own event loop: off this test's loop, in a thread.
    listed = await asyncio.to_thread(
        runner.invoke, main, ["--config", str(config_file), "runs", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert listed.output.strip()
    shown["runs --json"] = listed.output
    unreachable_file = tmp_path / "unreachable.toml"
    unreachable_file.write_text(f'[listener]\nstore = "{unreachable}"\n')
    for flags in ([], ["--debug"]):
        args = [*flags, "--config", str(unreachable_file), "runs", "--json"]
        failed = await asyncio.to_thread(runner.invoke, main, args)
        assert failed.exit_code == 3, failed.output
        shown[f"runs error {flags}"] = failed.output + (failed.stderr or "")

    formatter = logging.Formatter("%(name)s %(message)s")
    shown["log records"] = "\n".join(formatter.format(record) for record in caplog.records)
    assert caplog.records  # the scan read some log lines
    assert {name: leaks(text) for name, text in shown.items() if leaks(text)} == {}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("run-1", "run-1"),
        (None, "-"),
        ("a\nb", '"a\\nb"'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("caf\u00e9", '"caf\\u00e9"'),
        ("x" * 12, "xxxxxxxxxx...(+2 chars)"),
        ("\n" * 12, '"' + "\\n" * 10 + '"...(+2 chars)'),
    ],
)
def test_log_text_keeps_sender_text_on_one_short_line(value: str | None, shown: str) -> None:
    assert log_text(value, limit=10) == shown
