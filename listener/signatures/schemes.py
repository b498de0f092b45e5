"""The schemes by name, as configuration and the command line spell them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from listener.signatures._common import DEFAULT_TOLERANCE
from listener.signatures.base import SignatureScheme
from listener.signatures.github import GitHubSignature
from listener.signatures.standard_webhooks import StandardWebhooks
from listener.signatures.timestamped import NextmvSignature, StripeSignature

_SCHEMES: Final[
    dict[str, type[StandardWebhooks | NextmvSignature | StripeSignature | GitHubSignature]]
] = {
    StandardWebhooks.name: StandardWebhooks,
    NextmvSignature.name: NextmvSignature,
    StripeSignature.name: StripeSignature,
    GitHubSignature.name: GitHubSignature,
}


# The names `scheme_from_name` builds, as configuration and the command line spell them.
SCHEME_NAMES: Final = tuple(sorted(_SCHEMES))


def scheme_from_name(
    name: str, secrets: Sequence[str], tolerance: int | None = DEFAULT_TOLERANCE
) -> SignatureScheme:
    """Build the scheme called ``name`` (as configured for a source)."""
    try:
        cls = _SCHEMES[name]
    except KeyError:
        known = ", ".join(sorted(_SCHEMES))
        raise ValueError(f"unknown signature scheme {name!r}; known: {known}") from None
    return cls(secrets, tolerance=tolerance)
