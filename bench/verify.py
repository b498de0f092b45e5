"""Microseconds per Standard Webhooks ``v1`` verification, against peers and bare hmac.

    python bench/verify.py

Candidates, all verifying the same ~1 KiB JSON body signed with the reference test secret:

* bare: ``hmac.new(key, content, sha256).digest()`` + ``hmac.compare_digest`` over content
  built in advance: the MAC and the comparison alone, with no header handling at all.
* listener: ``StandardWebhooks.verify`` (header lookup, strict parsing, MAC, comparison,
  tolerance check), with the clock fixed through ``now=``.
* standardwebhooks / svix: the reference packages' ``verify``, with a current timestamp since
  their clock cannot be fixed. ``standardwebhooks`` is called with ``json_parse=False`` so no
  candidate parses JSON.

Samples are interleaved (one sample of each candidate per round) so machine noise hits all
alike, and each candidate's best round counts. The script reports; it always exits 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import platform
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
ROUNDS = 15
SAMPLE_SECONDS = 0.03
TARGET_VS_BARE = 1.5
TARGET_VS_SVIX = 3.0


def make_body() -> bytes:
    """A run.status event of about 1 KiB, shaped like a real delivery."""
    event = {
        "type": "run.status",
        "id": "evt_01HZX6Q8Y3K2M7N4P5R6S7T8V9",
        "created_at": "2026-05-09T07:35:25.123456Z",
        "data": {
            "run_id": "devint-9f3c2a1b7e6d5c4b",
            "application_id": "routing",
            "status_v2": "succeeded",
            "metadata": {
                "created_at": "2026-05-09T07:31:02.000000Z",
                "duration_ms": 263123,
                "input_size": 184532,
                "output_size": 92211,
                "format": {"input": {"type": "json"}, "output": {"type": "json"}},
            },
            "options": {"solve.duration": "240s", "solve.threads": "4", "model": "vrp"},
            "statistics": {
                "result": {"value": 18234.52, "elapsed": 239.8, "custom": {"routes": 42}},
            },
        },
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    # Pad a description field so the body is 1024 bytes exactly.
    event["description"] = "x" * max(0, 1024 - len(body) - len(',"description":""'))
    return json.dumps(event, separators=(",", ":")).encode()


def best_microseconds(candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
    timers = {name: timeit.Timer(fn) for name, fn in candidates.items()}
    numbers = {}
    for name, timer in timers.items():
        count, elapsed = timer.autorange()
        numbers[name] = max(1, int(count * SAMPLE_SECONDS / max(elapsed, 1e-9)))
    best = {name: float("inf") for name in candidates}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            seconds = timer.timeit(numbers[name]) / numbers[name]
            best[name] = min(best[name], seconds * 1e6)
    return best


def main() -> int:
    # Run from a checkout without installing the package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from listener.signatures import StandardWebhooks

    body = make_body()
    now = int(time.time())
    ours = StandardWebhooks([SECRET])
    headers = ours.sign(body, msg_id=MSG_ID, timestamp=now)
    raw_key = base64.b64decode(SECRET.removeprefix("whsec_"))
    content = f"{MSG_ID}.{now}.".encode() + body
    expected = hmac.new(raw_key, content, hashlib.sha256).digest()
    sha256 = hashlib.sha256

    def bare() -> bool:
        return hmac.compare_digest(hmac.new(raw_key, content, sha256).digest(), expected)

    def listener() -> object:
        return ours.verify(body, headers, now=now)

    candidates: dict[str, Callable[[], object]] = {
        "bare hmac + compare_digest": bare,
        "listener StandardWebhooks": listener,
    }
    notes: list[str] = []
    try:
        from standardwebhooks.webhooks import Webhook as StandardWebhook

        reference = StandardWebhook(SECRET)
        candidates["standardwebhooks"] = lambda: reference.verify(body, headers, json_parse=False)
    except ImportError:
        notes.append("standardwebhooks is not installed: skipped")
    try:
        from svix.webhooks import Webhook as SvixWebhook

        svix = SvixWebhook(SECRET)
        candidates["svix"] = lambda: svix.verify(body, headers)
    except ImportError:
        notes.append("svix is not installed: skipped")

    # Every candidate must accept the delivery, or its timing means nothing.
    for name, fn in list(candidates.items()):
        try:
            result = fn()
        except Exception as error:  # a report: note any failure and go on
            notes.append(f"{name} rejected the delivery ({type(error).__name__}): skipped")
            del candidates[name]
            continue
        if result is False:
            notes.append(f"{name} did not match: skipped")
            del candidates[name]

    results = best_microseconds(candidates)
    bare_us = results.get("bare hmac + compare_digest")
    svix_us = results.get("svix")

    print(
        f"Standard Webhooks v1 verify, {len(body)} byte body, best of {ROUNDS} interleaved "
        f"rounds, Python {platform.python_version()}"
    )
    print()
    print(f"{'candidate':<28} {'us/verify':>10} {'vs bare':>9} {'vs svix':>9}")
    print("-" * 59)
    for name, micros in results.items():
        vs_bare = f"{micros / bare_us:.2f}x" if bare_us else "-"
        vs_svix = f"{micros / svix_us:.2f}x" if svix_us else "-"
        print(f"{name:<28} {micros:>10.2f} {vs_bare:>9} {vs_svix:>9}")
    print()

    ours_us = results.get("listener StandardWebhooks")
    if ours_us is not None and bare_us:
        ratio = ours_us / bare_us
        verdict = "PASS" if ratio <= TARGET_VS_BARE else "FAIL"
        print(f"{verdict}  listener within {TARGET_VS_BARE}x of bare hmac: {ratio:.2f}x")
    if ours_us is not None and svix_us:
        speedup = svix_us / ours_us
        verdict = "PASS" if speedup >= TARGET_VS_SVIX else "FAIL"
        print(f"{verdict}  listener at least {TARGET_VS_SVIX}x faster than svix: {speedup:.2f}x")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
