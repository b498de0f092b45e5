"""`keys`: signing keys for webhook sources."""

from __future__ import annotations

import click

from listener.cli.output import print_json
from listener.cli.root import json_option


@click.group()
def keys() -> None:
    """Signing keys for webhook sources."""


@keys.command("generate")
@click.option("--kind", type=click.Choice(["hmac", "ed25519"]), default="hmac", show_default=True)
@json_option
def keys_generate(kind: str, as_json: bool) -> None:
    """A new whsec_ HMAC secret, or an Ed25519 whsk_ (signing) / whpk_ (verifying) pair."""
    from listener.signatures import generate_ed25519_keypair, generate_hmac_secret

    if kind == "hmac":
        secret = generate_hmac_secret()
        if as_json:
            print_json({"secret": secret})
        else:
            click.echo(secret)
        return
    signing, public = generate_ed25519_keypair()
    if as_json:
        print_json({"signing_key": signing, "public_key": public})
        return
    click.echo(f"signing key (sender only): {signing}")
    click.echo(f"public key (receiver's secrets): {public}")
