"""`keys generate`."""

from __future__ import annotations

import json
from pathlib import Path

from cli.support import invoke, run_cli
from listener.signatures import StandardWebhooks


def test_keys_generate(tmp_path: Path) -> None:
    secret = run_cli("keys", "generate", cwd=tmp_path).stdout.strip()
    assert secret.startswith("whsec_")
    scheme = StandardWebhooks([secret])
    scheme.verify(b"{}", scheme.sign(b"{}", msg_id="m1"))

    pair = json.loads(
        run_cli("keys", "generate", "--kind", "ed25519", "--json", cwd=tmp_path).stdout
    )
    signer = StandardWebhooks([pair["signing_key"]])
    verifier = StandardWebhooks([pair["public_key"]])
    verifier.verify(b"{}", signer.sign(b"{}", msg_id="m2"))


def test_keys_generate_in_process() -> None:
    hmac_key = json.loads(invoke("keys", "generate", "--json").stdout)["secret"]
    assert hmac_key.startswith("whsec_")
    pair = invoke("keys", "generate", "--kind", "ed25519").stdout.splitlines()
    assert pair[0].startswith("signing key (sender only): whsk_")
    assert pair[1].startswith("public key (receiver's secrets): whpk_")
