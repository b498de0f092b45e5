"""Callback tokens shown masked wherever a URL or path is printed."""

from __future__ import annotations

import pytest

from listener.sources import callback_url, mask_token


@pytest.mark.parametrize(
    ("shown", "masked"),
    [
        ("/hooks/cb/n1.00ff", "/hooks/cb/***"),
        ("/hooks/cb/n1.00ff?x=1", "/hooks/cb/***?x=1"),
        ("https://l.example/app/hooks/cb/n1.00ff", "https://l.example/app/hooks/cb/***"),
        ("/hooks/nextmv", "/hooks/nextmv"),
        ("/healthz", "/healthz"),
    ],
)
def test_mask_token(shown: str, masked: str) -> None:
    assert mask_token(shown) == masked


def test_an_issued_callback_url_shows_no_token() -> None:
    url = callback_url("https://l.example", "cb", "nonce-1", secret="s")
    token = url.rsplit("/", 1)[1]
    assert token not in mask_token(url)
    assert mask_token(url) == "https://l.example/hooks/cb/***"
