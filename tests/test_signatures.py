"""Signature schemes: published vectors, round trips, rotation, tolerance, hostile input."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as ReferenceWebhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceError
from starlette.datastructures import Headers
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixError

from listener.signatures import (
    BadSignature,
    GitHubSignature,
    MalformedHeader,
    MissingHeader,
    NextmvSignature,
    SignatureError,
    SignatureScheme,
    StandardWebhooks,
    StripeSignature,
    TimestampTooNew,
    TimestampTooOld,
    Verified,
    generate_ed25519_keypair,
    generate_hmac_secret,
    scheme_from_name,
)

# Published Standard Webhooks test vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# Published GitHub test vector.
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

NOW = 1_700_000_000
BODY = b'{"type":"run.status","data":{"run_id":"r-1","status_v2":"succeeded"}}'
HMAC_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
PLAIN_SECRET = "plain text secret for nextmv"
PLAIN_OTHER = "another plain secret"


def sw_headers(
    signature: str = SW_SIGNATURE,
    msg_id: str = SW_ID,
    timestamp: str = str(SW_TIMESTAMP),
) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}


def hmac_hex(key: bytes, content: bytes) -> str:
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def all_schemes(secret_plain: str = PLAIN_SECRET) -> list[SignatureScheme]:
    return [
        StandardWebhooks([HMAC_SECRET]),
        NextmvSignature([secret_plain]),
        StripeSignature([secret_plain]),
        GitHubSignature([secret_plain]),
    ]


# --- published vectors --------------------------------------------------------------------


def test_standard_webhooks_vector_verifies() -> None:
    scheme = StandardWebhooks([SW_SECRET])
    verified = scheme.verify(SW_BODY, sw_headers(), now=SW_TIMESTAMP)
    assert verified == Verified(msg_id=SW_ID, timestamp=SW_TIMESTAMP)


def test_standard_webhooks_vector_is_reproduced_by_sign() -> None:
    headers = StandardWebhooks([SW_SECRET]).sign(SW_BODY, msg_id=SW_ID, timestamp=SW_TIMESTAMP)
    assert headers == sw_headers()


def test_github_vector_verifies() -> None:
    headers = {"X-Hub-Signature-256": GH_SIGNATURE, "X-GitHub-Delivery": "d-1"}
    verified = GitHubSignature([GH_SECRET]).verify(GH_BODY, headers)
    assert verified == Verified(msg_id=None, timestamp=None)  # X-GitHub-Delivery is not signed


def test_github_vector_is_reproduced_by_sign() -> None:
    headers = GitHubSignature([GH_SECRET]).sign(GH_BODY, msg_id="d-1")
    assert headers == {"X-Hub-Signature-256": GH_SIGNATURE, "X-GitHub-Delivery": "d-1"}


def test_github_without_delivery_header_has_no_msg_id() -> None:
    verified = GitHubSignature([GH_SECRET]).verify(GH_BODY, {"x-hub-signature-256": GH_SIGNATURE})
    assert verified == Verified(msg_id=None, timestamp=None)


@pytest.mark.parametrize(
    "signature",
    [
        "v1,",
        SW_SIGNATURE[:8],
        SW_SIGNATURE[:-1],
        SW_SIGNATURE[:-2] + "=",
        "v1," + base64.b64encode(base64.b64decode(SW_SIGNATURE[3:])[:16]).decode(),
        "v1," + base64.b64encode(base64.b64decode(SW_SIGNATURE[3:]) + b"\0").decode(),
        SW_SIGNATURE.replace("g0hM", "g0hN"),
        # Base64 is decoded strictly: junk that a lenient decoder would skip is a mismatch.
        SW_SIGNATURE[:10] + "!" + SW_SIGNATURE[10:],
        SW_SIGNATURE[:10] + "\n" + SW_SIGNATURE[10:],
        SW_SIGNATURE + "==",
        "v1a," + SW_SIGNATURE[3:],
        "v2," + SW_SIGNATURE[3:],
    ],
)
def test_standard_webhooks_partial_or_altered_signature_fails(signature: str) -> None:
    with pytest.raises(BadSignature):
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers(signature), now=SW_TIMESTAMP)


@pytest.mark.parametrize(
    "signature",
    ["sha256=", GH_SIGNATURE[:8] + "0", GH_SIGNATURE[:15], GH_SIGNATURE[:-1], GH_SIGNATURE + "0"],
)
def test_github_partial_signature_fails(signature: str) -> None:
    with pytest.raises(BadSignature):
        GitHubSignature([GH_SECRET]).verify(GH_BODY, {"X-Hub-Signature-256": signature})


def test_github_accepts_uppercase_hex() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + GH_SIGNATURE[7:].upper()}
    assert GitHubSignature([GH_SECRET]).verify(GH_BODY, headers).timestamp is None


def test_body_must_be_the_exact_bytes_signed() -> None:
    with pytest.raises(BadSignature):
        StandardWebhooks([SW_SECRET]).verify(b'{"test":2432232314}', sw_headers(), now=SW_TIMESTAMP)
    with pytest.raises(BadSignature):
        GitHubSignature([GH_SECRET]).verify(GH_BODY + b"\n", {"X-Hub-Signature-256": GH_SIGNATURE})


# --- the HMAC is exactly hmac.new's, for any key length -----------------------------------


@settings(max_examples=200)
@given(secret=st.text(min_size=16, max_size=300), body=st.binary(max_size=300))
def test_hmac_matches_the_standard_library_for_any_key(secret: str, body: bytes) -> None:
    try:
        key = secret.encode()
    except UnicodeEncodeError:
        return
    headers = GitHubSignature([secret]).sign(body, msg_id="d")
    assert headers["X-Hub-Signature-256"] == "sha256=" + hmac_hex(key, body)


@pytest.mark.parametrize("length", [16, 24, 32, 63, 64, 65, 128, 200])
def test_standard_webhooks_hmac_for_any_key_length(length: int) -> None:
    key = bytes(range(256))[:length]
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = StandardWebhooks([secret]).sign(BODY, msg_id="m", timestamp=NOW)
    digest = hmac.new(key, f"m.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
@pytest.mark.parametrize("body", [b"", BODY, b"\xff\xfe not utf-8 \x00", b"x" * 100_000])
def test_round_trip(scheme: SignatureScheme, body: bytes) -> None:
    headers = scheme.sign(body, msg_id="msg_1", timestamp=NOW)
    verified = scheme.verify(body, headers, now=NOW)
    if isinstance(scheme, StandardWebhooks):
        assert verified == Verified("msg_1", NOW)
    elif isinstance(scheme, GitHubSignature):
        assert verified == Verified(None, None)  # the delivery header is not signed
    else:
        assert verified == Verified(None, NOW)


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_sign_defaults_to_now_and_verifies_with_the_real_clock(scheme: SignatureScheme) -> None:
    headers = scheme.sign(BODY, msg_id="msg_1")
    scheme.verify(BODY, headers)


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_another_secret_does_not_verify(scheme: SignatureScheme) -> None:
    headers = scheme.sign(BODY, msg_id="msg_1", timestamp=NOW)
    other = scheme_from_name(scheme.name, [OTHER_SECRET])
    with pytest.raises(BadSignature):
        other.verify(BODY, headers, now=NOW)


def test_ed25519_round_trip_with_public_key_only_receiver() -> None:
    private, public = generate_ed25519_keypair()
    headers = StandardWebhooks([private]).sign(BODY, msg_id="msg_1", timestamp=NOW)
    assert headers["webhook-signature"].startswith("v1a,")
    assert StandardWebhooks([public]).verify(BODY, headers, now=NOW) == Verified("msg_1", NOW)
    # A signing key verifies too, through the public key derived from it.
    assert StandardWebhooks([private]).verify(BODY, headers, now=NOW) == Verified("msg_1", NOW)


def test_ed25519_rejects_other_keys_bodies_and_truncation() -> None:
    private, _ = generate_ed25519_keypair()
    _, other_public = generate_ed25519_keypair()
    headers = StandardWebhooks([private]).sign(BODY, msg_id="msg_1", timestamp=NOW)
    with pytest.raises(BadSignature):
        StandardWebhooks([other_public]).verify(BODY, headers, now=NOW)
    with pytest.raises(BadSignature):
        StandardWebhooks([private]).verify(BODY + b" ", headers, now=NOW)
    truncated = dict(headers, **{"webhook-signature": headers["webhook-signature"][:40]})
    with pytest.raises(BadSignature):
        StandardWebhooks([private]).verify(BODY, truncated, now=NOW)
    # An HMAC-only receiver cannot check v1a, so nothing it holds matches.
    with pytest.raises(BadSignature):
        StandardWebhooks([HMAC_SECRET]).verify(BODY, headers, now=NOW)


def test_ed25519_signature_covers_id_and_timestamp() -> None:
    private, public = generate_ed25519_keypair()
    headers = StandardWebhooks([private]).sign(BODY, msg_id="msg_1", timestamp=NOW)
    receiver = StandardWebhooks([public])
    with pytest.raises(BadSignature):
        receiver.verify(BODY, dict(headers, **{"webhook-id": "msg_2"}), now=NOW)
    with pytest.raises(BadSignature):
        receiver.verify(BODY, dict(headers, **{"webhook-timestamp": str(NOW + 1)}), now=NOW)


def test_header_with_v1_and_v1a_verifies_with_either_key() -> None:
    private, public = generate_ed25519_keypair()
    v1 = StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    v1a = StandardWebhooks([private]).sign(BODY, msg_id="m", timestamp=NOW)
    both = dict(
        v1, **{"webhook-signature": f"{v1a['webhook-signature']} {v1['webhook-signature']}"}
    )
    assert StandardWebhooks([HMAC_SECRET]).verify(BODY, both, now=NOW).msg_id == "m"
    assert StandardWebhooks([public]).verify(BODY, both, now=NOW).msg_id == "m"


@pytest.mark.parametrize("form", ["padded", "unpadded", "bare"])
def test_whsec_secret_forms_are_equivalent(form: str) -> None:
    key = base64.b64encode(b"k" * 32).decode()  # 32 bytes -> one "=" of padding
    assert key.endswith("=")
    secret = {"padded": "whsec_" + key, "unpadded": "whsec_" + key.rstrip("="), "bare": key}[form]
    signed = StandardWebhooks(["whsec_" + key]).sign(BODY, msg_id="m", timestamp=NOW)
    assert StandardWebhooks([secret]).sign(BODY, msg_id="m", timestamp=NOW) == signed


def test_stripe_key_is_the_whole_secret_string() -> None:
    secret = "whsec_not_base64_decoded"
    headers = StripeSignature([secret]).sign(BODY, msg_id="ignored", timestamp=NOW)
    expected = hmac_hex(secret.encode(), f"{NOW}.".encode() + BODY)
    assert headers == {"Stripe-Signature": f"t={NOW},v1={expected}"}


def test_nextmv_key_is_the_secret_utf8_bytes() -> None:
    secret = "sécret ✓ of some length"
    headers = NextmvSignature([secret]).sign(BODY, msg_id="ignored", timestamp=NOW)
    expected = hmac_hex(secret.encode(), f"{NOW * 1000}.".encode() + BODY)
    assert headers == {"Nextmv-Signature": f"t={NOW * 1000},v1={expected}"}


# --- rotation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "new", "old"),
    [
        (StandardWebhooks, HMAC_SECRET, OTHER_SECRET),
        (NextmvSignature, PLAIN_SECRET, PLAIN_OTHER),
        (StripeSignature, PLAIN_SECRET, PLAIN_OTHER),
        (GitHubSignature, PLAIN_SECRET, PLAIN_OTHER),
    ],
)
def test_rotation_receiver_holds_new_and_old(
    cls: Callable[[list[str]], SignatureScheme], new: str, old: str
) -> None:
    receiver = cls([new, old])
    for sender in (cls([new]), cls([old])):
        headers = sender.sign(BODY, msg_id="m", timestamp=NOW)
        receiver.verify(BODY, headers, now=NOW)
    # The receiver signs with the first (newest) secret only.
    signed = receiver.sign(BODY, msg_id="m", timestamp=NOW)
    cls([new]).verify(BODY, signed, now=NOW)
    with pytest.raises(BadSignature):
        cls([old]).verify(BODY, signed, now=NOW)


@pytest.mark.parametrize("cls", [NextmvSignature, StripeSignature])
def test_a_secret_added_later_verifies_too(cls: type[NextmvSignature]) -> None:
    receiver = cls([PLAIN_OTHER])
    headers = cls([PLAIN_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    with pytest.raises(BadSignature):
        receiver.verify(BODY, headers, now=NOW)
    receiver.add_secret(PLAIN_SECRET)
    receiver.verify(BODY, headers, now=NOW)
    # Still signs with the first secret; the old one still verifies.
    cls([PLAIN_OTHER]).verify(BODY, receiver.sign(BODY, msg_id="m", timestamp=NOW), now=NOW)
    assert repr(receiver).startswith(f"{cls.__name__}(keys=2,")
    with pytest.raises(ValueError, match="at least 16"):
        receiver.add_secret("short")


def test_rotation_header_carrying_both_standard_signatures() -> None:
    new = StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    old = StandardWebhooks([OTHER_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    sent = dict(
        new, **{"webhook-signature": f"{new['webhook-signature']} {old['webhook-signature']}"}
    )
    for secret in (HMAC_SECRET, OTHER_SECRET):
        assert StandardWebhooks([secret]).verify(BODY, sent, now=NOW) == Verified("m", NOW)
    with pytest.raises(BadSignature):
        StandardWebhooks([generate_hmac_secret()]).verify(BODY, sent, now=NOW)


@pytest.mark.parametrize("cls", [NextmvSignature, StripeSignature])
def test_rotation_header_carrying_both_hex_signatures(
    cls: Callable[[list[str]], SignatureScheme],
) -> None:
    new = next(iter(cls([PLAIN_SECRET]).sign(BODY, msg_id="m", timestamp=NOW).items()))
    old = next(iter(cls([PLAIN_OTHER]).sign(BODY, msg_id="m", timestamp=NOW).items()))
    old_v1 = old[1].split(",")[1]
    sent = {new[0]: f"{new[1]},{old_v1},v0=deadbeef"}
    for secret in (PLAIN_SECRET, PLAIN_OTHER):
        cls([secret]).verify(BODY, sent, now=NOW)
    with pytest.raises(BadSignature):
        cls(["a third secret, long enough"]).verify(BODY, sent, now=NOW)


def test_unknown_versions_and_malformed_entries_are_skipped() -> None:
    sent = sw_headers(f"v2,abc v1,!!notbase64!! v1,{'A' * 43}= v1a,%% {SW_SIGNATURE} v9")
    assert StandardWebhooks([SW_SECRET]).verify(SW_BODY, sent, now=SW_TIMESTAMP).msg_id == SW_ID


def test_public_key_only_receiver_rejects_hmac_and_junk_entries() -> None:
    _, public = generate_ed25519_keypair()
    signed = StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    junk = f"{signed['webhook-signature']} v1a,!!! v1a,{'A' * 86}=="
    with pytest.raises(BadSignature):
        StandardWebhooks([public]).verify(BODY, sw_headers(junk, "m", str(NOW)), now=NOW)


def test_public_key_and_hmac_secret_together() -> None:
    private, public = generate_ed25519_keypair()
    receiver = StandardWebhooks([public, HMAC_SECRET])
    for sender in (StandardWebhooks([private]), StandardWebhooks([HMAC_SECRET])):
        receiver.verify(BODY, sender.sign(BODY, msg_id="m", timestamp=NOW), now=NOW)
    # whpk_ cannot sign, so the first secret that can (the HMAC one) is used.
    assert receiver.sign(BODY, msg_id="m")["webhook-signature"].startswith("v1,")


# --- tolerance ----------------------------------------------------------------------------


def timestamped_schemes(tolerance: int | None) -> list[SignatureScheme]:
    return [
        StandardWebhooks([HMAC_SECRET], tolerance=tolerance),
        NextmvSignature([PLAIN_SECRET], tolerance=tolerance),
        StripeSignature([PLAIN_SECRET], tolerance=tolerance),
    ]


@pytest.mark.parametrize("scheme", timestamped_schemes(300), ids=lambda scheme: scheme.name)
def test_tolerance_edges(scheme: SignatureScheme) -> None:
    headers = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    assert scheme.verify(BODY, headers, now=NOW + 300).timestamp == NOW
    assert scheme.verify(BODY, headers, now=NOW - 300).timestamp == NOW
    with pytest.raises(TimestampTooOld):
        scheme.verify(BODY, headers, now=NOW + 301)
    with pytest.raises(TimestampTooNew):
        scheme.verify(BODY, headers, now=NOW - 301)
    with pytest.raises(TimestampTooOld):
        scheme.verify(BODY, headers, now=NOW + 300.5)


@pytest.mark.parametrize("scheme", timestamped_schemes(None), ids=lambda scheme: scheme.name)
def test_tolerance_none_disables_the_time_check(scheme: SignatureScheme) -> None:
    headers = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    scheme.verify(BODY, headers, now=NOW + 10**9)
    scheme.verify(BODY, headers, now=0)


@pytest.mark.parametrize("scheme", timestamped_schemes(0), ids=lambda scheme: scheme.name)
def test_tolerance_zero_accepts_only_the_exact_second(scheme: SignatureScheme) -> None:
    headers = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    scheme.verify(BODY, headers, now=NOW)
    with pytest.raises(TimestampTooOld):
        scheme.verify(BODY, headers, now=NOW + 1)


def test_custom_tolerance() -> None:
    scheme = StandardWebhooks([HMAC_SECRET], tolerance=60)
    headers = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    scheme.verify(BODY, headers, now=NOW + 60)
    with pytest.raises(TimestampTooOld):
        scheme.verify(BODY, headers, now=NOW + 61)


def test_github_ignores_tolerance() -> None:
    scheme = GitHubSignature([GH_SECRET], tolerance=0)
    headers = scheme.sign(GH_BODY, msg_id="d", timestamp=1)
    assert scheme.verify(GH_BODY, headers, now=NOW) == Verified(None, None)


def test_bad_signature_wins_over_stale_timestamp() -> None:
    # The signature is checked first, so a forgery is never reported as merely stale.
    headers = sw_headers(SW_SIGNATURE.replace("g0hM", "g0hN"))
    with pytest.raises(BadSignature):
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, headers, now=SW_TIMESTAMP + 10**6)
    with pytest.raises(TimestampTooOld):
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers(), now=SW_TIMESTAMP + 10**6)


def test_vector_is_rejected_by_the_real_clock() -> None:
    with pytest.raises(TimestampTooOld):
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers())


# --- Nextmv units -------------------------------------------------------------------------


def nextmv_header(t: str, body: bytes = BODY, secret: str = PLAIN_SECRET) -> dict[str, str]:
    return {"Nextmv-Signature": f"t={t},v1={hmac_hex(secret.encode(), f'{t}.'.encode() + body)}"}


def test_nextmv_accepts_seconds() -> None:
    verified = NextmvSignature([PLAIN_SECRET]).verify(BODY, nextmv_header(str(NOW)), now=NOW)
    assert verified == Verified(None, NOW)


def test_nextmv_accepts_milliseconds_and_reports_seconds() -> None:
    header = nextmv_header(str(NOW * 1000 + 999))
    verified = NextmvSignature([PLAIN_SECRET]).verify(BODY, header, now=NOW)
    assert verified == Verified(None, NOW)


def test_nextmv_sign_emits_milliseconds() -> None:
    headers = NextmvSignature([PLAIN_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    assert headers["Nextmv-Signature"].startswith(f"t={NOW * 1000},v1=")
    t_ms = int(NextmvSignature([PLAIN_SECRET]).sign(BODY, msg_id="m")["Nextmv-Signature"][2:15])
    assert abs(t_ms / 1000 - time.time()) < 60


def test_nextmv_millisecond_tolerance_edges() -> None:
    scheme = NextmvSignature([PLAIN_SECRET])
    assert scheme.verify(BODY, nextmv_header(str((NOW - 300) * 1000)), now=NOW).timestamp
    with pytest.raises(TimestampTooOld):
        scheme.verify(BODY, nextmv_header(str((NOW - 300) * 1000 - 1)), now=NOW)
    assert scheme.verify(BODY, nextmv_header(str((NOW + 300) * 1000)), now=NOW).timestamp
    with pytest.raises(TimestampTooNew):
        scheme.verify(BODY, nextmv_header(str((NOW + 300) * 1000 + 1)), now=NOW)


def test_stripe_reads_milliseconds_as_seconds_far_in_the_future() -> None:
    t = str(NOW * 1000)
    header = {"Stripe-Signature": nextmv_header(t)["Nextmv-Signature"]}
    with pytest.raises(TimestampTooNew):
        StripeSignature([PLAIN_SECRET]).verify(BODY, header, now=NOW)


def test_hex_header_tolerates_spaces_around_items() -> None:
    value = nextmv_header(str(NOW))["Nextmv-Signature"].replace(",", ", ")
    NextmvSignature([PLAIN_SECRET]).verify(BODY, {"Nextmv-Signature": value}, now=NOW)
    padded = nextmv_header(str(NOW))["Nextmv-Signature"].replace(",", " ,")
    with pytest.raises(MalformedHeader):
        NextmvSignature([PLAIN_SECRET]).verify(BODY, {"Nextmv-Signature": padded}, now=NOW)


# --- header names -------------------------------------------------------------------------


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title, lambda name: name])
@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_header_names_are_case_insensitive(
    scheme: SignatureScheme, case: Callable[[str], str]
) -> None:
    headers = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    recased = {case(name): value for name, value in headers.items()}
    assert scheme.verify(BODY, recased, now=NOW) == scheme.verify(BODY, headers, now=NOW)


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_starlette_headers(scheme: SignatureScheme) -> None:
    signed = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    raw = [(name.lower().encode(), value.encode("latin-1")) for name, value in signed.items()]
    raw.append((b"content-type", b"application/json"))
    scheme.verify(BODY, Headers(raw=raw), now=NOW)
    scheme.verify(BODY, Headers(headers=signed), now=NOW)


@pytest.mark.parametrize("case", [str.lower, str.title])
def test_svix_header_names(case: Callable[[str], str]) -> None:
    signed = StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    svix = {case(name.replace("webhook-", "svix-")): value for name, value in signed.items()}
    assert StandardWebhooks([HMAC_SECRET]).verify(BODY, svix, now=NOW) == Verified("m", NOW)


def test_webhook_names_take_precedence_over_svix_names() -> None:
    signed = StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    stale_svix = {name.replace("webhook-", "svix-"): "junk" for name in signed}
    assert StandardWebhooks([HMAC_SECRET]).verify(BODY, signed | stale_svix, now=NOW).msg_id == "m"


def test_unicode_case_folding_does_not_match_header_names() -> None:
    signed = StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    kelvin = {name.replace("k", "\u212a"): value for name, value in signed.items()}
    with pytest.raises(MissingHeader):
        StandardWebhooks([HMAC_SECRET]).verify(BODY, kelvin, now=NOW)


# --- missing and malformed headers --------------------------------------------------------


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_missing_header(missing: str) -> None:
    headers = sw_headers()
    del headers[missing]
    with pytest.raises(MissingHeader) as caught:
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, headers, now=SW_TIMESTAMP)
    assert caught.value.header == missing
    assert missing in str(caught.value)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp"])
def test_svix_missing_header(missing: str) -> None:
    headers = {name.replace("webhook-", "svix-"): value for name, value in sw_headers().items()}
    del headers[missing]
    with pytest.raises(MissingHeader) as caught:
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, headers, now=SW_TIMESTAMP)
    assert caught.value.header == missing


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_no_headers_at_all(scheme: SignatureScheme) -> None:
    with pytest.raises(MissingHeader):
        scheme.verify(BODY, {}, now=NOW)
    with pytest.raises(MissingHeader):
        scheme.verify(BODY, {"content-type": "application/json"}, now=NOW)


BAD_TIMESTAMPS = [
    "",
    " ",
    "1e3",
    "1.5",
    "1614265330.0",
    " 1614265330",
    "1614265330 ",
    " 123 ",
    "+1614265330",
    "-1614265330",
    "-0",
    "01614265330",
    "00",
    "0x10",
    "1_614_265_330",
    "١٦١٤٢٦٥٣٣٠",  # Arabic-Indic digits: str.isdigit() says yes
    "".join(chr(0xFF10 + int(digit)) for digit in "1614265330"),  # fullwidth digits
    "²",
    "nan",
    "inf",
    "1" * 16,
    "9" * 5000,
    "16142653\x0030",
    "1614265330\n",
]


@pytest.mark.parametrize("timestamp", BAD_TIMESTAMPS)
def test_standard_malformed_timestamp(timestamp: str) -> None:
    with pytest.raises(MalformedHeader) as caught:
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers(timestamp=timestamp))
    assert caught.value.header == "webhook-timestamp"


@pytest.mark.parametrize("cls", [NextmvSignature, StripeSignature])
@pytest.mark.parametrize("timestamp", [t for t in BAD_TIMESTAMPS if "," not in t])
def test_hex_malformed_timestamp(
    cls: Callable[[list[str]], SignatureScheme], timestamp: str
) -> None:
    header = cls([PLAIN_SECRET]).sign(BODY, msg_id="m", timestamp=NOW)
    name, value = next(iter(header.items()))
    value = f"t={timestamp}," + value.split(",", 1)[1]
    with pytest.raises(MalformedHeader):
        cls([PLAIN_SECRET]).verify(BODY, {name: value}, now=NOW)


def test_fifteen_digit_timestamp_parses_and_is_too_new() -> None:
    scheme = StandardWebhooks([HMAC_SECRET])
    headers = scheme.sign(BODY, msg_id="m", timestamp=10**14)
    assert len(headers["webhook-timestamp"]) == 15
    with pytest.raises(TimestampTooNew):
        scheme.verify(BODY, headers, now=NOW)


def test_timestamp_zero_is_well_formed_but_too_old() -> None:
    scheme = StandardWebhooks([HMAC_SECRET])
    with pytest.raises(TimestampTooOld):
        scheme.verify(BODY, scheme.sign(BODY, msg_id="m", timestamp=0), now=NOW)


@pytest.mark.parametrize(
    "signature", ["", " ", "   ", "v1", "garbage", ",abc", ",", "v1;abc", "\x00", "é"]
)
def test_standard_signature_header_without_entries_is_malformed(signature: str) -> None:
    with pytest.raises(MalformedHeader) as caught:
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers(signature), now=SW_TIMESTAMP)
    assert caught.value.header == "webhook-signature"


@pytest.mark.parametrize(
    "signature",
    ["v1,!!!", "v1,é", "v1,AAAA====", "v1,A", "v2,abc", "v1a,", "v1a,AAAA", "v1,\x00", "x,y"],
)
def test_standard_unmatchable_entries_are_bad_signatures(signature: str) -> None:
    with pytest.raises(BadSignature):
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers(signature), now=SW_TIMESTAMP)


@pytest.mark.parametrize("msg_id", ["", "\ud800"])
def test_standard_malformed_id(msg_id: str) -> None:
    with pytest.raises(MalformedHeader) as caught:
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, sw_headers(msg_id=msg_id))
    assert caught.value.header == "webhook-id"


def test_non_ascii_id_is_signed_as_utf8() -> None:
    scheme = StandardWebhooks([HMAC_SECRET])
    headers = scheme.sign(BODY, msg_id="msg_é✓", timestamp=NOW)
    assert scheme.verify(BODY, headers, now=NOW).msg_id == "msg_é✓"


@pytest.mark.parametrize("cls", [NextmvSignature, StripeSignature])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", MalformedHeader),
        ("garbage", MalformedHeader),
        (f"t={NOW}", MalformedHeader),
        (f"t={NOW},", MalformedHeader),
        ("v1=abc", MalformedHeader),
        (f"t={NOW},v0=abc", MalformedHeader),
        (f"t={NOW},t={NOW},v1=abc", MalformedHeader),
        (f"t=,v1={'0' * 64}", MalformedHeader),
        (f"T={NOW},V1={'0' * 64}", MalformedHeader),
        (f"t={NOW};v1={'0' * 64}", MalformedHeader),
        (f"t={NOW},v1=", BadSignature),
        (f"t={NOW},v1=zz", BadSignature),
        (f"t={NOW},v1={'0' * 64}", BadSignature),
        (f"t={NOW},v1={'é' * 64}", BadSignature),
        (f"t={NOW},v1=={'0' * 64}", BadSignature),
    ],
)
def test_hex_header_shapes(
    cls: Callable[[list[str]], SignatureScheme], value: str, error: type[SignatureError]
) -> None:
    name = "Nextmv-Signature" if cls is NextmvSignature else "Stripe-Signature"
    with pytest.raises(error):
        cls([PLAIN_SECRET]).verify(BODY, {name: value}, now=NOW)


def test_hex_partial_signature() -> None:
    value = nextmv_header(str(NOW))["Nextmv-Signature"]
    for cut in (len(value) - 1, value.index("v1=") + 3 + 8):
        with pytest.raises(BadSignature):
            NextmvSignature([PLAIN_SECRET]).verify(BODY, {"Nextmv-Signature": value[:cut]}, now=NOW)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", MalformedHeader),
        ("garbage", MalformedHeader),
        (GH_SIGNATURE[7:], MalformedHeader),
        ("sha1=" + GH_SIGNATURE[7:], MalformedHeader),
        ("SHA256=" + GH_SIGNATURE[7:], MalformedHeader),
        (" " + GH_SIGNATURE, MalformedHeader),
        ("sha256", MalformedHeader),
        ("sha256=" + "é" * 64, BadSignature),
        ("sha256=" + GH_SIGNATURE[7:] + " ", BadSignature),
    ],
)
def test_github_header_shapes(value: str, error: type[SignatureError]) -> None:
    with pytest.raises(error):
        GitHubSignature([GH_SECRET]).verify(GH_BODY, {"X-Hub-Signature-256": value})


def test_github_sha1_header_alone_is_missing() -> None:
    with pytest.raises(MissingHeader):
        GitHubSignature([GH_SECRET]).verify(GH_BODY, {"X-Hub-Signature": "sha1=abc"})


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_non_text_header_values_are_malformed(scheme: SignatureScheme) -> None:
    signed = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    for name in signed:
        if name == "X-GitHub-Delivery":
            continue
        broken: Mapping[str, object] = {**signed, name: 12345}
        with pytest.raises(MalformedHeader):
            scheme.verify(BODY, broken, now=NOW)  # type: ignore[arg-type]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status", "reason"),
    [
        (MissingHeader, 400, "missing_header"),
        (MalformedHeader, 400, "malformed_header"),
        (BadSignature, 401, "bad_signature"),
        (TimestampTooOld, 401, "timestamp_too_old"),
        (TimestampTooNew, 401, "timestamp_too_new"),
    ],
)
def test_error_status_codes_and_reasons(
    cls: type[SignatureError], status: int, reason: str
) -> None:
    assert issubclass(cls, SignatureError)
    error = cls("message", header="h")
    assert (error.http_status, error.reason, error.header, str(error)) == (
        status,
        reason,
        "h",
        "message",
    )


def raised(call: Callable[[], object]) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        call()
    return caught.value


def test_errors_and_reprs_never_show_secrets_or_signatures() -> None:
    private, public = generate_ed25519_keypair()
    secrets = [SW_SECRET, private, public]
    scheme = StandardWebhooks(secrets)
    forged = SW_SIGNATURE.replace("g0hM", "g0hN")
    errors = [
        raised(lambda: scheme.verify(SW_BODY, sw_headers(forged), now=SW_TIMESTAMP)),
        raised(lambda: scheme.verify(SW_BODY, sw_headers(), now=SW_TIMESTAMP + 301)),
        raised(lambda: scheme.verify(SW_BODY, sw_headers(), now=SW_TIMESTAMP - 301)),
        raised(lambda: scheme.verify(SW_BODY, sw_headers(forged[:10]), now=SW_TIMESTAMP)),
        raised(lambda: scheme.verify(SW_BODY, sw_headers("junk"), now=SW_TIMESTAMP)),
        raised(lambda: scheme.verify(SW_BODY, {}, now=SW_TIMESTAMP)),
    ]
    assert {type(error) for error in errors} == {
        BadSignature,
        TimestampTooOld,
        TimestampTooNew,
        MalformedHeader,
        MissingHeader,
    }
    plain = [PLAIN_SECRET, PLAIN_OTHER]
    for hex_scheme in (NextmvSignature(plain), StripeSignature(plain), GitHubSignature(plain)):
        signed = hex_scheme.sign(BODY, msg_id="m", timestamp=NOW)
        forged_hex = {
            name: value.replace("v1=", "v1=0").replace("sha256=", "sha256=0")
            for name, value in signed.items()
        }
        errors.append(raised(functools.partial(hex_scheme.verify, BODY, forged_hex, now=NOW)))
        assert PLAIN_SECRET not in repr(hex_scheme)
        assert PLAIN_OTHER not in repr(hex_scheme)
    secret_texts = [*secrets, SW_SECRET[6:], private[5:], public[5:], *plain]
    for error in errors:
        for shown in (str(error), repr(error), error.message):
            for text in [*secret_texts, SW_SIGNATURE[3:], forged[3:], forged[3:13]]:
                assert text not in shown
    for text in secret_texts:
        assert text not in repr(scheme)
        assert text not in str(scheme)
        # Not even the internals, should a debugger or a log dump them.
        assert text not in repr(vars(scheme))


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_!!!! this is not base64 at all",
        "whsec_",
        "whsec_A",
        "whsk_c2hvcnQ=",
        "whsk_not base64 either",
        "whpk_" + base64.b64encode(b"x" * 31).decode(),
        "whpk_" + base64.b64encode(b"x" * 33).decode(),
        "not_base64_and_no_prefix!",
    ],
)
def test_malformed_standard_secret_is_rejected_without_showing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="secret #2") as caught:
        StandardWebhooks([HMAC_SECRET, secret])
    assert secret not in str(caught.value)
    if len(secret) > 6:
        assert secret[6:] not in str(caught.value)
    # Nothing chained either: a decoding error could otherwise carry the secret along.
    assert caught.value.__context__ is None or caught.value.__suppress_context__


@pytest.mark.parametrize(
    "cls", [StandardWebhooks, NextmvSignature, StripeSignature, GitHubSignature]
)
def test_constructor_rejects_bad_arguments(cls: Callable[..., SignatureScheme]) -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        cls([])
    with pytest.raises(ValueError, match="empty"):
        cls([""])
    with pytest.raises(TypeError, match="list of secrets"):
        cls(HMAC_SECRET)
    with pytest.raises(TypeError, match="secret #2"):
        cls([HMAC_SECRET, b"bytes"])
    with pytest.raises(ValueError, match="tolerance"):
        cls([HMAC_SECRET], tolerance=-1)
    with pytest.raises(ValueError, match="tolerance"):
        cls([HMAC_SECRET], tolerance=1.5)


def test_utf8_schemes_reject_unencodable_secret() -> None:
    with pytest.raises(ValueError, match="secret #1") as caught:
        NextmvSignature(["bad secret, long \ud800"])
    assert "bad" not in str(caught.value)


def test_public_key_only_scheme_cannot_sign() -> None:
    _, public = generate_ed25519_keypair()
    with pytest.raises(ValueError, match="whpk_") as caught:
        StandardWebhooks([public]).sign(BODY, msg_id="m")
    assert public not in str(caught.value)


@pytest.mark.parametrize("scheme", timestamped_schemes(300), ids=lambda scheme: scheme.name)
def test_sign_rejects_negative_timestamps(scheme: SignatureScheme) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        scheme.sign(BODY, msg_id="m", timestamp=-1)


def test_sign_rejects_empty_standard_id() -> None:
    with pytest.raises(ValueError, match="msg_id"):
        StandardWebhooks([HMAC_SECRET]).sign(BODY, msg_id="")


# --- helpers and protocol -----------------------------------------------------------------


def test_generate_hmac_secret() -> None:
    secret = generate_hmac_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) == 32
    assert secret != generate_hmac_secret()
    for scheme in all_schemes(secret):
        scheme.verify(BODY, scheme.sign(BODY, msg_id="m", timestamp=NOW), now=NOW)


def test_generate_ed25519_keypair() -> None:
    private, public = generate_ed25519_keypair()
    assert private.startswith("whsk_")
    assert public.startswith("whpk_")
    assert len(base64.b64decode(private[5:], validate=True)) == 32
    assert len(base64.b64decode(public[5:], validate=True)) == 32
    assert generate_ed25519_keypair() != (private, public)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("standard-webhooks", StandardWebhooks),
        ("nextmv", NextmvSignature),
        ("stripe", StripeSignature),
        ("github", GitHubSignature),
    ],
)
def test_scheme_from_name(name: str, cls: type) -> None:
    scheme = scheme_from_name(name, [HMAC_SECRET], tolerance=None)
    assert type(scheme) is cls
    assert scheme.name == name
    assert isinstance(scheme, SignatureScheme)
    assert scheme_from_name(name, [HMAC_SECRET]).verify(
        BODY, scheme.sign(BODY, msg_id="m", timestamp=NOW), now=NOW
    )


def test_scheme_from_name_tolerance_is_passed_on() -> None:
    scheme = scheme_from_name("stripe", [PLAIN_SECRET], tolerance=None)
    scheme.verify(BODY, scheme.sign(BODY, msg_id="m", timestamp=1), now=NOW)


def test_scheme_from_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="svix") as caught:
        scheme_from_name("svix", [HMAC_SECRET])
    for known in ("standard-webhooks", "nextmv", "stripe", "github"):
        assert known in str(caught.value)


def test_verified_is_frozen() -> None:
    verified = Verified("m", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verified.msg_id = "other"  # type: ignore[misc]


# --- interoperability with the reference libraries ----------------------------------------


def now_seconds() -> int:
    return int(time.time())


def test_reference_library_signature_verifies_with_ours() -> None:
    timestamp = now_seconds()
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = ReferenceWebhook(SW_SECRET).sign(SW_ID, when, SW_BODY.decode())
    headers = sw_headers(signature, timestamp=str(timestamp))
    assert StandardWebhooks([SW_SECRET]).verify(SW_BODY, headers) == Verified(SW_ID, timestamp)
    # A bare base64 secret without the prefix means the same key to both.
    assert StandardWebhooks([SW_SECRET[6:]]).verify(SW_BODY, headers).msg_id == SW_ID


def test_our_signature_verifies_with_the_reference_library() -> None:
    headers = StandardWebhooks([SW_SECRET]).sign(SW_BODY, msg_id=SW_ID)
    assert ReferenceWebhook(SW_SECRET).verify(SW_BODY, headers) == {"test": 2432232314}
    # And both reject the same forgery.
    forged = dict(headers, **{"webhook-signature": SW_SIGNATURE})
    with pytest.raises(ReferenceError):
        ReferenceWebhook(SW_SECRET).verify(SW_BODY, forged)
    with pytest.raises(BadSignature):
        StandardWebhooks([SW_SECRET]).verify(SW_BODY, forged)


def test_svix_signature_verifies_with_ours() -> None:
    timestamp = now_seconds()
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = SvixWebhook(SW_SECRET).sign(SW_ID, when, BODY.decode())
    headers = {"svix-id": SW_ID, "svix-timestamp": str(timestamp), "svix-signature": signature}
    assert StandardWebhooks([SW_SECRET]).verify(BODY, headers) == Verified(SW_ID, timestamp)


def test_our_signature_verifies_with_svix() -> None:
    signed = StandardWebhooks([SW_SECRET]).sign(BODY, msg_id=SW_ID)
    SvixWebhook(SW_SECRET).verify(BODY, signed)
    svix_names = {name.replace("webhook-", "svix-"): value for name, value in signed.items()}
    SvixWebhook(SW_SECRET).verify(BODY, svix_names)
    with pytest.raises(SvixError):
        SvixWebhook(generate_hmac_secret()).verify(BODY, svix_names)


def test_rotation_header_verifies_with_both_reference_libraries() -> None:
    new = StandardWebhooks([generate_hmac_secret()]).sign(BODY, msg_id=SW_ID)
    old = StandardWebhooks([SW_SECRET]).sign(
        BODY, msg_id=SW_ID, timestamp=int(new["webhook-timestamp"])
    )
    both = dict(
        new, **{"webhook-signature": f"{new['webhook-signature']} {old['webhook-signature']}"}
    )
    ReferenceWebhook(SW_SECRET).verify(BODY, both)
    SvixWebhook(SW_SECRET).verify(BODY, both)


# --- hostile input never raises anything but SignatureError -------------------------------

REAL_NAMES = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "Nextmv-Signature",
    "Stripe-Signature",
    "X-Hub-Signature-256",
    "X-GitHub-Delivery",
]
# Any code point, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()), max_size=80)
near_valid = st.one_of(
    any_text,
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(["v1,", "v1a,", "t=", "sha256="]),
        any_text,
    ),
    st.builds(
        lambda t, sig: f"t={t},v1={sig}", st.integers(min_value=-1, max_value=10**16), any_text
    ),
    st.lists(st.sampled_from(["v1,", "v1a,", "v2,", " ", ",", "=", "AAAA", "t=1", "v1=ab"])).map(
        "".join
    ),
)
real_headers = st.dictionaries(
    st.sampled_from(REAL_NAMES).flatmap(
        lambda name: st.sampled_from([name, name.lower(), name.upper()])
    ),
    near_valid,
)
hostile_headers = st.builds(
    lambda extra, real: extra | real, st.dictionaries(any_text, any_text, max_size=4), real_headers
)
SCHEMES_UNDER_FIRE: list[SignatureScheme] = [
    StandardWebhooks([SW_SECRET, generate_ed25519_keypair()[0], generate_ed25519_keypair()[1]]),
    StandardWebhooks([SW_SECRET], tolerance=None),
    NextmvSignature([PLAIN_SECRET]),
    StripeSignature([PLAIN_SECRET], tolerance=None),
    GitHubSignature([PLAIN_SECRET]),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=256),
    headers=hostile_headers,
    now=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
)
def test_hostile_input_only_raises_signature_errors(
    body: bytes, headers: dict[str, str], now: float | None
) -> None:
    for scheme in SCHEMES_UNDER_FIRE:
        outcome = verify_outcome(scheme, body, headers, now)
        if isinstance(outcome, SignatureError):
            assert outcome.http_status in (400, 401)
            assert outcome.reason
        else:
            assert isinstance(outcome, Verified)


def verify_outcome(
    scheme: SignatureScheme, body: bytes, headers: Mapping[str, str], now: float | None
) -> Verified | SignatureError:
    # Anything but a SignatureError propagates and fails the test.
    try:
        return scheme.verify(body, headers, now=now)
    except SignatureError as error:
        return error


@settings(max_examples=200)
@given(body=st.binary(max_size=256), msg_id=any_text.filter(bool), mutation=st.integers(0, 3))
def test_signed_then_tampered_never_raises_anything_else(
    body: bytes, msg_id: str, mutation: int
) -> None:
    for scheme in SCHEMES_UNDER_FIRE:
        try:
            headers = scheme.sign(body, msg_id=msg_id, timestamp=NOW)
        except ValueError:
            continue  # a lone surrogate cannot be sent as an id
        sent = body
        if mutation == 1:
            headers = {name: value[:-1] for name, value in headers.items()}
        elif mutation == 2:
            sent = body + b"x"
        elif mutation == 3:
            headers = {name.upper(): value + " " for name, value in headers.items()}
        outcome = verify_outcome(scheme, sent, headers, NOW)
        if mutation == 0:
            assert isinstance(outcome, Verified)
        elif mutation == 2:
            assert isinstance(outcome, BadSignature)


# --- keys no HMAC scheme takes ----------------------------------------------------------


@pytest.mark.parametrize("cls", [NextmvSignature, StripeSignature, GitHubSignature])
def test_hmac_schemes_refuse_a_public_key(cls: Callable[[list[str]], SignatureScheme]) -> None:
    _, public = generate_ed25519_keypair()
    with pytest.raises(ValueError, match=r"secret #1 is a public key \(whpk_\)") as caught:
        cls([public])
    assert public[5:] not in str(caught.value)


@pytest.mark.parametrize(
    ("cls", "secret", "size"),
    [
        (NextmvSignature, "short", 5),
        (StripeSignature, "whsec_abc", 9),
        (GitHubSignature, "é" * 7, 14),
        (StandardWebhooks, "whsec_" + base64.b64encode(b"k" * 15).decode(), 15),
    ],
)
def test_hmac_schemes_refuse_keys_under_16_bytes(
    cls: Callable[[list[str]], SignatureScheme], secret: str, size: int
) -> None:
    with pytest.raises(ValueError, match=f"secret #1 is {size} bytes; .* at least 16"):
        cls([secret])
    longer = secret + "-padding-to-length"
    if cls is StandardWebhooks:
        longer = "whsec_" + base64.b64encode(b"k" * 16).decode()
    cls([longer])  # 16 bytes or more is taken


# --- bounded work for unauthenticated headers ---------------------------------------------


def test_standard_webhooks_examines_at_most_ten_entries() -> None:
    valid = sw_headers(SW_SIGNATURE)["webhook-signature"]
    bogus = " ".join(f"v1,{'A' * 43}=" for _ in range(10))
    scheme = StandardWebhooks([SW_SECRET])
    late = sw_headers(f"{bogus} {valid}")
    with pytest.raises(BadSignature):
        scheme.verify(SW_BODY, late, now=SW_TIMESTAMP)
    early = sw_headers(f"{valid} {bogus}")
    assert scheme.verify(SW_BODY, early, now=SW_TIMESTAMP).msg_id == SW_ID


@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda scheme: scheme.name)
def test_a_signature_header_over_2048_characters_is_malformed(scheme: SignatureScheme) -> None:
    headers = scheme.sign(BODY, msg_id="m", timestamp=NOW)
    name = next(key for key in headers if "signature" in key.lower())
    headers[name] = headers[name] + " v1a," + "A" * 45_000
    with pytest.raises(MalformedHeader, match="longer than 2048 characters"):
        scheme.verify(BODY, headers, now=NOW)
