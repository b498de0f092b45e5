"""Hostile input: forged, replayed, stale, future, oversized, truncated, abandoned and
malformed deliveries against a served receiver, with genuine ones interleaved.

Requests come from a seeded generator (so two batches are alike and a failure replays).
Every run id a hostile request names starts with `evil-` or `forged-`; genuine ones with
`good-`. The receiver must never answer 5xx, never 2xx to a request that is not
authentic, never call a handler or store a run for one, and must answer every genuine
delivery 202 and route it to its handler exactly once. Memory is measured with
`tracemalloc` over two equal batches after a warm-up: the second must not grow the heap
beyond a bound (a per-request leak shows up as growth proportional to the batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from listener.app import Listener
from listener.dispatch import DispatchSettings
from listener.events import RunEvent, RunStatus
from listener.poller import PollSettings
from listener.providers import native
from listener.receiver import ReceiverSettings
from listener.registry import Handlers
from listener.signatures import (
    GitHubSignature,
    NextmvSignature,
    SignatureScheme,
    StandardWebhooks,
    generate_ed25519_keypair,
    generate_hmac_secret,
)
from listener.sources import Source, new_nonce
from listener.store.base import NewRun
from listener.store.sqlite import SQLiteStore
from listener.testing import LoopbackServer, nextmv_run_status_payload

from .common import CallLog, Tally, all_runs, settle_calls
from .rawhttp import RawClient
from .witness import Witness

__all__ = ["HostileSettings", "Probe", "ProbeGenerator", "run_hostile"]

APPLICATION = "routing"
MAX_BODY = 16 * 1024
SIGNED_SOURCES = ("nextmv", "std", "ed", "gh")
STATUSES = ("running", "succeeded", "failed", "canceled")

# Request kinds and their weights. Only the first four are authentic (a valid, current
# signature or token on a whole body) and may be answered 2xx; every other kind must get
# a 4xx, or no answer at all when the sender hangs up or is cut off mid-body.
WEIGHTS: Mapping[str, int] = {
    "genuine": 8,
    "replay": 4,
    "resigned": 3,
    "signed_unroutable": 5,
    "wrong_secret": 11,
    "stale": 6,
    "future": 6,
    "oversized": 6,
    "truncated": 7,
    "abandoned": 2,
    "tampered": 8,
    "malformed_headers": 14,
    "cross_scheme": 4,
    "unknown_source": 4,
    "bad_method": 3,
    "bad_token": 5,
    "garbage_path": 4,
}
AUTHENTIC = frozenset({"genuine", "replay", "resigned", "signed_unroutable"})
_REPEATABLE = 64
_JSON = (b"content-type", b"application/json")
_PROBLEMS_KEPT = 50


@dataclass(frozen=True, slots=True)
class HostileSettings:
    seed: int = 11
    warmup: int = 600
    batch: int = 1500  # each of the two measured batches
    concurrency: int = 16
    # Heap growth allowed over the second batch; a healthy receiver grows it by tens of
    # KiB (the genuine runs' bookkeeping). Keeping ~700 bytes per request, say the headers
    # of each one, goes past it, and keeping bodies goes far past it.
    memory_bound: int = 1024 * 1024
    measure_memory: bool = True
    limit: float = 120.0


@dataclass(slots=True)
class Probe:
    kind: str
    method: str
    path: str
    body: bytes
    headers: list[tuple[bytes, bytes]]
    chunked: bool = False
    # Body bytes announced when the sender hangs up before sending them all.
    declared: int | None = None
    # The run and status a handler must see exactly once (genuine deliveries only).
    genuine: tuple[str, str] | None = None


@dataclass(slots=True)
class ProbeGenerator:
    """Seeded requests for the receiver at hand (its secrets and callback URL maker)."""

    seed: int
    schemes: Mapping[str, SignatureScheme]
    callback_path: Callable[[str], str]  # nonce -> "/hooks/cb/{token}"
    # Records a run with its callback nonce, as a submission does before its callback.
    register: Callable[[str, str], Awaitable[None]]
    rng: random.Random = field(init=False)
    # (run id, nonce) of callback probes made but not yet registered.
    unregistered: list[tuple[str, str]] = field(default_factory=list)
    # Every genuine transition sent; the last few genuine requests answered, to repeat.
    genuine: set[tuple[str, str]] = field(default_factory=set)
    repeatable: list[Probe] = field(default_factory=list)
    in_flight: list[Probe] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def register_runs(self) -> None:
        """Record the runs of the callback probes made so far, before they are sent."""
        pending, self.unregistered = self.unregistered, []
        for run_id, nonce in pending:
            await self.register(run_id, nonce)

    def answered(self) -> None:
        """The requests made so far have been answered: they may now be repeated. Only
        the latest few are kept, so the generator's own memory stays flat."""
        self.repeatable = (self.repeatable + self.in_flight)[-_REPEATABLE:]
        self.in_flight = []

    # -- building blocks -----------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.seed}-{self.counter}"

    def _body(self, source: str, run_id: str, status: str, pad: int = 0) -> bytes:
        if source == "nextmv":
            payload = nextmv_run_status_payload(run_id, APPLICATION, status)
        else:
            event = RunEvent("unused", "local", APPLICATION, run_id, RunStatus(status))
            payload = native.build_payload(event)
        if pad:
            payload["padding"] = "x" * pad
        return json.dumps(payload, separators=(",", ":")).encode()

    def _sign(
        self,
        source: str,
        body: bytes,
        *,
        scheme: SignatureScheme | None = None,
        at: int | None = None,
    ) -> list[tuple[bytes, bytes]]:
        signer = scheme or self.schemes[source]
        signed = signer.sign(body, msg_id=self._id("msg"), timestamp=at)
        return [_JSON, *((name.encode(), value.encode()) for name, value in signed.items())]

    def _text(self, size: int) -> str:
        return "".join(chr(self.rng.randint(33, 126)) for _ in range(size))

    # -- kinds ---------------------------------------------------------------------------

    def make(self) -> Probe:
        kinds = list(WEIGHTS)
        kind = self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        if kind in ("replay", "resigned") and not self.repeatable:
            kind = "genuine"
        probe: Probe = getattr(self, f"_{kind}")()
        probe.kind = kind
        return probe

    def _genuine(self) -> Probe:
        run_id, status = self._id("good"), self.rng.choice(STATUSES)
        source = self.rng.choice([*SIGNED_SOURCES, "cb"])
        if source == "cb":
            nonce = new_nonce()
            self.unregistered.append((run_id, nonce))
            body = self._body("cb", run_id, status)
            path = self.callback_path(nonce)
            probe = Probe("", "POST", path, body, [_JSON], genuine=(run_id, status))
        else:
            body = self._body(source, run_id, status)
            probe = Probe(
                "",
                "POST",
                f"/hooks/{source}",
                body,
                self._sign(source, body),
                genuine=(run_id, status),
            )
        self.genuine.add((run_id, status))
        self.in_flight.append(probe)
        return probe

    def _replay(self) -> Probe:
        # The very same request again: the same signature, id and body.
        original = self.rng.choice(self.repeatable)
        return Probe("", original.method, original.path, original.body, original.headers)

    def _resigned(self) -> Probe:
        # The same transition in a new delivery (a platform retry with a fresh id).
        original = self.rng.choice(self.repeatable)
        source = original.path.split("/")[2]
        if source == "cb":
            return Probe("", "POST", original.path, original.body + b" ", original.headers)
        return Probe("", "POST", original.path, original.body, self._sign(source, original.body))

    def _signed_unroutable(self) -> Probe:
        # Authentic bodies that say nothing a run can be made of: kept as unroutable.
        source = self.rng.choice(SIGNED_SOURCES)
        run_id = self._id("evil-u")
        choice = self.rng.randrange(8)
        if choice == 0:
            body = self._text(self.rng.randint(0, 200)).encode()
        elif choice == 1:
            body = b"[" * 3000 + b"]" * 3000
        elif choice == 2:
            body = json.dumps({"type": "run.status", "data": {"status": "succeeded"}}).encode()
        elif choice == 3:
            body = self._body(source, run_id, "succeeded").replace(b"succeeded", b"exploded")
        elif choice == 4:
            body = json.dumps({"data": {"run_id": 12345, "status": "failed"}}).encode()
        elif choice == 5:
            body = json.dumps({"data": {"run_id": run_id + "\u0000", "status": "failed"}}).encode()
        elif choice == 6:
            body = b'{"data":{"run_id":"\\ud800evil","status":"failed","status_v2":"failed"}}'
        else:
            body = b""
        return Probe("", "POST", f"/hooks/{source}", body, self._sign(source, body))

    def _wrong_secret(self) -> Probe:
        source = self.rng.choice(SIGNED_SOURCES)
        body = self._body(source, self._id("evil-w"), self.rng.choice(STATUSES))
        if source == "ed":
            scheme: SignatureScheme = StandardWebhooks([generate_ed25519_keypair()[0]])
        elif source == "nextmv":
            scheme = NextmvSignature([generate_hmac_secret()])
        elif source == "gh":
            scheme = GitHubSignature([generate_hmac_secret()])
        else:
            scheme = StandardWebhooks([generate_hmac_secret()])
        return Probe("", "POST", f"/hooks/{source}", body, self._sign(source, body, scheme=scheme))

    def _dated(self, sign: int) -> Probe:
        source = self.rng.choice(("nextmv", "std", "ed"))
        body = self._body(source, self._id("evil-d"), self.rng.choice(STATUSES))
        at = int(time.time()) + sign * self.rng.randint(301, 10**7)
        return Probe("", "POST", f"/hooks/{source}", body, self._sign(source, body, at=at))

    def _stale(self) -> Probe:
        return self._dated(-1)

    def _future(self) -> Probe:
        return self._dated(+1)

    def _oversized(self) -> Probe:
        source = self.rng.choice(SIGNED_SOURCES)
        pad = self.rng.randint(MAX_BODY, 4 * MAX_BODY)
        body = self._body(source, self._id("evil-o"), "succeeded", pad=pad)
        chunked = self.rng.random() < 0.5
        return Probe(
            "", "POST", f"/hooks/{source}", body, self._sign(source, body), chunked=chunked
        )

    def _truncated(self) -> Probe:
        source = self.rng.choice(SIGNED_SOURCES)
        body = self._body(source, self._id("evil-t"), self.rng.choice(STATUSES))
        headers = self._sign(source, body)
        return Probe("", "POST", f"/hooks/{source}", body[: self.rng.randrange(len(body))], headers)

    def _abandoned(self) -> Probe:
        # Correctly signed, announced whole, cut off on the wire: never to be stored.
        source = self.rng.choice(SIGNED_SOURCES)
        body = self._body(source, self._id("evil-a"), "succeeded")
        probe = Probe("", "POST", f"/hooks/{source}", body, self._sign(source, body))
        probe.body, probe.declared = body[: self.rng.randrange(len(body))], len(body)
        return probe

    def _tampered(self) -> Probe:
        # Signed for one run, then pointed at another: a forged route to a handler.
        source = self.rng.choice(SIGNED_SOURCES)
        run_id = self._id("evil-x")
        body = self._body(source, run_id, "running")
        headers = self._sign(source, body)
        forged = body.replace(run_id.encode(), self._id("forged").encode())
        if self.rng.random() < 0.5:
            forged = forged.replace(b"running", b"succeeded")
        return Probe("", "POST", f"/hooks/{source}", forged, headers)

    def _malformed_headers(self) -> Probe:
        source = self.rng.choice(SIGNED_SOURCES)
        body = self._body(source, self._id("evil-m"), "succeeded")
        headers = [_JSON]
        junk = self._text(self.rng.randint(0, 120))
        now = str(int(time.time()))
        variants: dict[str, list[list[tuple[str, str | bytes]]]] = {
            "std": [
                [],
                [("webhook-id", "x"), ("webhook-timestamp", now)],
                [("webhook-id", "x"), ("webhook-timestamp", "abc"), ("webhook-signature", junk)],
                [
                    ("webhook-id", "x"),
                    ("webhook-timestamp", "0" + now),
                    ("webhook-signature", "v1,AA=="),
                ],
                [
                    ("webhook-id", "x"),
                    ("webhook-timestamp", "9" * 40),
                    ("webhook-signature", "v1,AA=="),
                ],
                [("webhook-id", ""), ("webhook-timestamp", now), ("webhook-signature", "v1,AA==")],
                [
                    ("webhook-id", "x"),
                    ("webhook-timestamp", now),
                    ("webhook-signature", "v1,!!!" + junk),
                ],
                [
                    ("webhook-id", "x"),
                    ("webhook-timestamp", now),
                    ("webhook-signature", "v9,AAAA " + junk),
                ],
                [("svix-id", "x"), ("svix-timestamp", now), ("svix-signature", junk)],
                [
                    ("webhook-id", b"\xff\xfe"),
                    ("webhook-timestamp", now),
                    ("webhook-signature", b"v1,\xff"),
                ],
                [
                    ("webhook-id", "x"),
                    ("webhook-timestamp", now),
                    ("webhook-signature", "v1," + "A" * 8000),
                ],
            ],
            "nextmv": [
                [],
                [("nextmv-signature", "")],
                [("nextmv-signature", junk)],
                [("nextmv-signature", "t=,v1=")],
                [("nextmv-signature", f"t={now}")],
                [("nextmv-signature", "v1=" + "a" * 64)],
                [("nextmv-signature", "t=-5,v1=" + "a" * 64)],
                [("nextmv-signature", f"t={now}000,v1=" + "g" * 64)],
                [("nextmv-signature", f"t={now}000,v1=" + "a" * 63)],
                [("nextmv-signature", "t=" + "9" * 40 + ",v1=" + "a" * 64)],
                [("nextmv-signature", b"t=\xff,v1=\xfe")],
            ],
            "gh": [
                [],
                [("x-hub-signature-256", "")],
                [("x-hub-signature-256", "sha1=" + "a" * 40)],
                [("x-hub-signature-256", "sha256=")],
                [("x-hub-signature-256", "sha256=" + "z" * 64)],
                [("x-hub-signature-256", junk)],
            ],
        }
        options = variants["std" if source == "ed" else source]
        for name, value in self.rng.choice(options):
            headers.append((name.encode(), value if isinstance(value, bytes) else value.encode()))
        return Probe("", "POST", f"/hooks/{source}", body, headers)

    def _cross_scheme(self) -> Probe:
        source = self.rng.choice(SIGNED_SOURCES)
        other = self.rng.choice([s for s in SIGNED_SOURCES if s != source])
        body = self._body(source, self._id("evil-c"), "succeeded")
        return Probe("", "POST", f"/hooks/{source}", body, self._sign(other, body))

    def _unknown_source(self) -> Probe:
        body = self._body("std", self._id("evil-n"), "succeeded")
        name = self.rng.choice(["nope", "STD", "std ", "nextmv.", "a" * 100, "a" * 101])
        return Probe("", "POST", f"/hooks/{quote(name)}", body, self._sign("std", body))

    def _bad_method(self) -> Probe:
        source = self.rng.choice([*SIGNED_SOURCES, "cb"])
        body = self._body("std", self._id("evil-g"), "succeeded")
        method = self.rng.choice(["GET", "PUT", "DELETE", "PATCH"])
        return Probe("", method, f"/hooks/{source}", body, self._sign("std", body))

    def _bad_token(self) -> Probe:
        body = self._body("cb", self._id("evil-k"), "succeeded")
        token = self.rng.choice(
            [
                "",
                self._text(40),
                f"{new_nonce()}.{'0' * 32}",
                f"{new_nonce()}.",
                ".",
                "a" * 2000,
                f"{new_nonce()}.{self._text(32)}",
            ]
        )
        path = "/hooks/cb" if not token else f"/hooks/cb/{quote(token, safe='')}"
        return Probe("", "POST", path, body, [_JSON])

    def _garbage_path(self) -> Probe:
        segments = [self._text(self.rng.randint(1, 30)) for _ in range(self.rng.randint(1, 4))]
        path = "/" + "/".join(quote(s, safe="") for s in segments)
        if self.rng.random() < 0.5:
            path = "/hooks" + path
        return Probe("", "POST", path, self._text(100).encode(), [])


class _Ledger:
    """Checks each answer as it comes and keeps only counts (and the first problems), so
    the test's own bookkeeping does not grow with the number of requests."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.by_status: Counter[int | None] = Counter()
        self.problems: list[str] = []
        self.more_problems = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < _PROBLEMS_KEPT:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def record(self, probe: Probe, status: int | None, error: str | None) -> None:
        kind = probe.kind
        self.by_kind[kind] += 1
        self.by_status[status] += 1
        where = f"{kind} {probe.method} {probe.path[:60]!r}"
        if status is None:
            # An early 413 may close the connection under a body still being streamed;
            # an abandoned request has no answer to read.
            if kind != "abandoned" and not (kind == "oversized" and probe.chunked):
                self.problem(f"{where}: no answer ({error})")
        elif status >= 500:
            self.problem(f"{where}: answered {status}")
        elif kind not in AUTHENTIC and 200 <= status < 300:
            self.problem(f"{where}: a request that is not authentic was answered {status}")
        elif kind == "genuine" and status != 202:
            self.problem(f"{where}: a genuine delivery was answered {status}, not 202")
        elif kind in ("replay", "resigned") and status != 200:
            self.problem(f"{where}: a repeated delivery was answered {status}, not 200")
        elif kind == "signed_unroutable" and status not in (200, 202):
            self.problem(f"{where}: an authentic unroutable body was answered {status}")

    def count(self, low: int, high: int) -> int:
        return sum(n for status, n in self.by_status.items() if status and low <= status < high)


async def _send(client: RawClient, probe: Probe, ledger: _Ledger) -> None:
    if probe.declared is not None:
        with contextlib.suppress(OSError):
            await client.abandon(
                probe.method, probe.path, probe.headers, probe.body, declared=probe.declared
            )
        ledger.record(probe, None, None)
        return
    try:
        answer = await client.request(
            probe.method, probe.path, probe.headers, probe.body, chunked=probe.chunked
        )
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        ledger.record(probe, None, type(exc).__name__)
    else:
        ledger.record(probe, answer.status, None)


async def run_hostile(
    directory: Path,
    settings: HostileSettings | None = None,
    *,
    name: str = "hostile input",
    witness: Witness | None = None,
) -> Tally:
    """Run the hostile-input scenario with a SQLite store in `directory`."""
    settings = settings or HostileSettings()
    nextmv_secret, std_secret = generate_hmac_secret(), generate_hmac_secret()
    gh_secret = generate_hmac_secret()
    ed_private, ed_public = generate_ed25519_keypair()
    callback_secret = f"cbs_{generate_hmac_secret()[6:]}"
    if witness is not None:
        witness.secret("Nextmv webhook secret", nextmv_secret)
        witness.secret("Standard Webhooks secret", std_secret)
        witness.secret("GitHub webhook secret", gh_secret)
        witness.secret("Ed25519 signing key", ed_private)
        witness.secret("callback secret", callback_secret)
    calls = CallLog()
    router = Handlers()
    router.add(calls.handler("every"), name="system.every")
    store = SQLiteStore(f"sqlite:///{directory / 'hostile.db'}")
    await store.open()
    listener = Listener(
        store=store,
        sources=[
            Source("nextmv", "nextmv", NextmvSignature([nextmv_secret])),
            Source("std", "local", StandardWebhooks([std_secret])),
            Source("ed", "local", StandardWebhooks([ed_public])),
            Source("gh", "local", GitHubSignature([gh_secret])),
            Source("cb", "local"),
        ],
        handlers=[router],
        callback_secret=callback_secret,
        receiver=ReceiverSettings(max_body_bytes=MAX_BODY),
        dispatch=DispatchSettings(sweep_interval=0.05),
        poll=PollSettings(enabled=False),
    )
    schemes: dict[str, SignatureScheme] = {
        "nextmv": NextmvSignature([nextmv_secret]),
        "std": StandardWebhooks([std_secret]),
        "ed": StandardWebhooks([ed_private]),
        "gh": GitHubSignature([gh_secret]),
    }
    tally = Tally(name)
    ledger = _Ledger()
    growth: int | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(listener)
            app = listener.asgi()
            server = await stack.enter_async_context(
                LoopbackServer(witness.wrap(app) if witness is not None else app)
            )

            def callback_path(nonce: str) -> str:
                url = listener.callback_url("cb", nonce, base_url=server.base_url)
                if witness is not None:
                    token = url.rsplit("/", 1)[1]
                    witness.secret("callback token MAC", token.partition(".")[2])
                return url[len(server.base_url) :]

            async def register(run_id: str, nonce: str) -> None:
                await store.register_run(NewRun(run_id, "local", "app", callback={"nonce": nonce}))

            generator = ProbeGenerator(settings.seed, schemes, callback_path, register)
            client = RawClient(server.host, server.port, connections=settings.concurrency)
            stack.push_async_callback(client.aclose)
            async with asyncio.timeout(settings.limit):
                await _batch(client, generator, ledger, settings.warmup, settings.concurrency)
                growth = await _measured(client, generator, ledger, settings)
                await settle_calls(store)
            await _audit(tally, store, calls, generator, ledger)
            if witness is not None:
                page = await client.request("GET", "/metrics")
                witness.metrics_pages.append(page.body.decode())
                kept = await store.list_unroutable(limit=10_000)
                witness.unroutable_headers += [json.dumps(dict(r.headers)) for r in kept.items]
    finally:
        await store.close()
    if growth is not None:
        tally.notes["heap growth over the second batch (KiB)"] = growth // 1024
        if growth > settings.memory_bound:
            tally.problem(
                f"the heap grew by {growth} bytes over the second batch of {settings.batch} "
                f"requests (bound {settings.memory_bound})"
            )
    return tally


async def _batch(
    client: RawClient, generator: ProbeGenerator, ledger: _Ledger, count: int, concurrency: int
) -> None:
    for start in range(0, count, concurrency):
        probes = [generator.make() for _ in range(min(concurrency, count - start))]
        await generator.register_runs()
        await asyncio.gather(*(_send(client, probe, ledger) for probe in probes))
        generator.answered()


def _heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


class _Sink(logging.Handler):
    """Formats each record and forgets it, as a handler writing to a file or a socket does."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


@contextlib.contextmanager
def _forgetful_logging() -> Iterator[None]:
    """Root handlers swapped for a `_Sink` meanwhile. pytest's handlers keep every record
    of a test for its report: that memory is the harness's, not the receiver's."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_Sink()]
    try:
        yield
    finally:
        root.handlers = saved


async def _measured(
    client: RawClient, generator: ProbeGenerator, ledger: _Ledger, settings: HostileSettings
) -> int | None:
    """Run the two measured batches; the heap growth over the second, when measured."""
    size, width = settings.batch, settings.concurrency
    if not settings.measure_memory:
        await _batch(client, generator, ledger, 2 * size, width)
        return None
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        with _forgetful_logging():
            await _batch(client, generator, ledger, size, width)
            before = _heap()
            await _batch(client, generator, ledger, size, width)
            return _heap() - before
    finally:
        if started_here:
            tracemalloc.stop()


async def _audit(
    tally: Tally, store: SQLiteStore, calls: CallLog, generator: ProbeGenerator, ledger: _Ledger
) -> None:
    counts = await store.counts()
    tally.sent = sum(ledger.by_kind.values())
    tally.acknowledged = ledger.count(200, 300)
    tally.stored = counts.events
    tally.handler_calls = calls.total
    tally.duplicates_suppressed = ledger.by_status[200]
    tally.notes.update({f"sent {kind}": n for kind, n in sorted(ledger.by_kind.items())})
    tally.notes["refused 4xx"] = ledger.count(400, 500)
    # Starlette's router redirects a path that only differs by a trailing slash; the
    # redirect target is verified like any other request.
    tally.notes["redirected 3xx"] = ledger.count(300, 400)
    tally.notes["unroutable kept"] = counts.unroutable
    tally.problems.extend(ledger.problems)
    if ledger.more_problems:
        tally.problem(f"... and {ledger.more_problems} more problems with answers")

    genuine = generator.genuine
    for run_id, status in sorted(genuine):
        n = calls.count("every", run_id, status)
        if n == 0:
            tally.lost += 1
            tally.problem(f"genuine {run_id} {status}: its handler was never called")
        elif n > 1:
            tally.double_calls += n - 1
            tally.problem(f"genuine {run_id} {status}: its handler was called {n} times")
    intruders = {run for run in calls.runs() if not run.startswith("good-")}
    if intruders:
        tally.problem(f"handlers called for runs no authentic delivery named: {len(intruders)}")
    genuine_runs = {run_id for run_id, _ in genuine}
    stored = {run.run_id for run in await all_runs(store)}
    if stored - genuine_runs:
        tally.problem(
            f"runs stored from requests that were not genuine: {len(stored - genuine_runs)}"
        )
    missing = genuine_runs - stored
    if missing:
        tally.lost += len(missing)
        tally.problem(f"genuine runs missing from the store: {len(missing)}")
