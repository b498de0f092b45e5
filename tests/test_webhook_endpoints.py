"""Deciding whether an account's webhook endpoint is right: the pure half of `ensure`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from listener.webhook_endpoints import Endpoint, check_endpoint, parse_endpoints

URL = "https://hooks.example.com/hooks/nextmv"
TYPES = ("run.status",)


def right(endpoint_id: str = "listener-nextmv", **changes: Any) -> Endpoint:
    return dataclasses.replace(Endpoint(endpoint_id, URL, TYPES), **changes)


def check(
    *endpoints: Endpoint, endpoint_id: str = "listener-nextmv"
) -> tuple[str, str, tuple[str, ...]]:
    found = check_endpoint(endpoints, endpoint_id=endpoint_id, url=URL, event_types=TYPES)
    return found.action, found.endpoint_id, found.reasons


def test_parse_reads_a_listing_as_the_platform_gives_it() -> None:
    listing = [
        {
            "id": "a",
            "endpoint_url": URL,
            "event_types": ["run.status"],
            "description": "listener",
            "enabled": True,
        },
        {"id": "b", "url": "https://other.example/x", "event_types": [], "disabled": True},
        {"id": "c", "endpoint_url": URL, "event_types": ["run.status", 7], "status": "paused"},
        {"id": "d", "endpoint_url": URL},
        {"endpoint_url": URL},  # no id: not an endpoint we could manage
        "junk",
    ]
    assert parse_endpoints(listing) == [
        Endpoint("a", URL, ("run.status",), True, "listener"),
        Endpoint("b", "https://other.example/x", (), False),
        Endpoint("c", URL, ("run.status",), False),
        Endpoint("d", URL, (), None),
    ]
    assert parse_endpoints({"items": listing[:1]}) == parse_endpoints(listing[:1])
    assert parse_endpoints({"webhooks": []}) == []


def test_parse_refuses_what_is_not_a_listing() -> None:
    with pytest.raises(ValueError, match="not a list of endpoints"):
        parse_endpoints({"error": "nope"})


def test_a_right_endpoint_needs_nothing() -> None:
    assert check(right(), right("someone-else", url="https://x.example/")) == (
        "ok",
        "listener-nextmv",
        (),
    )
    # Silence about `enabled` counts as enabled.
    assert check(right(enabled=None))[0] == "ok"


def test_a_missing_endpoint_is_created() -> None:
    assert check() == ("create", "listener-nextmv", ("no endpoint listener-nextmv",))
    # Endpoints elsewhere, or at our URL but disabled, do not receive our events.
    assert (
        check(right("other", url="https://x.example/"), right("paused", enabled=False))[0]
        == "create"
    )


def test_an_endpoint_at_our_url_under_another_id_is_taken_as_ours() -> None:
    action, endpoint_id, reasons = check(right("registered-by-hand"))
    assert (action, endpoint_id) == ("ok", "registered-by-hand")
    assert reasons == ("endpoint registered-by-hand already receives them",)


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        (
            {"url": "https://old.example/hooks/nextmv"},
            ("it points at https://old.example/hooks/nextmv, not " + URL,),
        ),
        ({"url": ""}, (f"it points at no URL, not {URL}",)),
        ({"event_types": ()}, ("it does not subscribe to run.status",)),
        ({"enabled": False}, ("it is disabled",)),
        (
            {"enabled": False, "event_types": ("run.other",)},
            ("it does not subscribe to run.status", "it is disabled"),
        ),
    ],
)
def test_a_wrong_endpoint_is_replaced_with_the_reasons(
    changes: dict[str, Any], reasons: tuple[str, ...]
) -> None:
    assert check(right(**changes)) == ("replace", "listener-nextmv", reasons)


def test_a_right_endpoint_under_another_id_spares_a_second_one() -> None:
    # Replacing ours would make two endpoints at our URL, and every delivery twice.
    assert check(right(enabled=False), right("other")) == (
        "ok",
        "other",
        ("endpoint other already receives them",),
    )
