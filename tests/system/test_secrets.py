"""No secret, no received signature and no key material in any log line or on /metrics.

Smaller runs of the chaos, hostile-input and outage scenarios are made with every logger
of the process at DEBUG; all records (message, exception text and structured fields) and
every /metrics page are searched for the webhook secrets, the Ed25519 signing key, the
platform API key, the callback secret and token MACs, the database password, each
signature value the receiver was sent, and the `whsec_`/`whsk_` prefixes.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from scenarios import (
    ChaosSettings,
    HostileSettings,
    OutageSettings,
    Witness,
    assert_held,
    capture_all_logs,
    run_chaos,
    run_hostile,
    run_postgres_outage,
    run_sqlite_outage,
)

from listener.signatures import generate_hmac_secret

SMALL_OUTAGE = OutageSettings(messages=40, cut_after=10, refusals=4)


async def test_no_secret_in_logs_or_metrics(tmp_path: Path) -> None:
    witness = Witness()
    with capture_all_logs() as logs:
        tallies = [
            await run_chaos(
                f"sqlite:///{tmp_path / 'chaos.db'}", ChaosSettings(runs=40), witness=witness
            ),
            await run_hostile(
                tmp_path,
                HostileSettings(warmup=0, batch=200, measure_memory=False),
                witness=witness,
            ),
            await run_sqlite_outage(tmp_path, SMALL_OUTAGE, witness=witness),
        ]
    for tally in tallies:
        assert_held(tally)
    # The search covered something: secrets, signatures, pages, and the logs that matter.
    assert len(witness.secrets) >= 8
    assert len(witness.signatures) > 100
    assert len(witness.metrics_pages) == 3
    assert {"listener.receiver", "listener.dispatch"} <= logs.loggers
    assert witness.unroutable_headers
    assert witness.leaks(logs.text) == []
    for page in witness.metrics_pages:
        assert witness.leaks(page) == []
    for headers in witness.unroutable_headers:
        assert witness.leaks(headers) == []


async def test_no_database_password_in_logs_during_an_outage(pg_schema_url: str) -> None:
    witness = Witness()
    password = f"pw-{secrets.token_hex(12)}"
    with capture_all_logs() as logs:
        tally = await run_postgres_outage(
            pg_schema_url, SMALL_OUTAGE, password=password, witness=witness
        )
    assert_held(tally)
    # The driver's connection errors were logged, and logged clean.
    assert any(name.startswith("psycopg") for name in logs.loggers)
    assert witness.leaks(logs.text) == []
    assert witness.leaks(witness.metrics_pages[0]) == []


def test_the_search_finds_a_planted_secret() -> None:
    """The checks above would see a leak: a secret or signature logged on purpose is
    found in a message, an exception's text and a structured field."""
    witness = Witness()
    secret = witness.secret("planted secret", generate_hmac_secret())
    signature = "v1,abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG="
    witness.signature_header(signature)
    log = logging.getLogger("listener.planted")
    with capture_all_logs() as logs:
        log.debug("the key is %s", secret.removeprefix("whsec_"))
    assert witness.leaks(logs.text) == ["planted secret (key material)"]
    with capture_all_logs() as logs:
        try:
            raise ValueError(secret)
        except ValueError:
            log.exception("verification failed")
    assert "planted secret" in witness.leaks(logs.text)
    with capture_all_logs() as logs:
        log.info("delivery", extra={"signature": signature.split(",")[1]})
    assert witness.leaks(logs.text) == ["1 received signature values"]
