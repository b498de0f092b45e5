"""Signed deliveries per second through the receiver, against a bare Starlette endpoint.

    python bench/receiver.py

Two servers, each run alone under uvicorn in a process of its own on loopback, started
the way `listener serve` starts one (`uvicorn.Server.run` with the options `serve` builds,
so the same event loop choice, uvloop when installed, and the same httptools protocol with
the service's connection limits):

* bare: a Starlette endpoint that reads the body and answers 202, the floor for any
  receiver on this stack;
* receiver: the listener's app with a SQLite store in a temporary directory, one
  Standard Webhooks source and one handler attached (so the dispatcher runs too).

Two more servers show where the receiver's time goes, one step at a time (throughput
only; the target is judged on the receiver):

* verify: the bare endpoint plus the listener's own signature check and payload parsing
  (the same `Source` the receiver uses), nothing stored: the ceiling for any receiver
  that verifies on this stack;
* no handlers: the receiver with its store and no handler, so no dispatcher work.

And the endpoint a user would write by hand instead of the listener, the peer the second
target is judged against:

* peer: Starlette, the body verified with the `standardwebhooks` package, then inserted
  into SQLite (WAL, `synchronous=FULL`) with one commit per request before the answer,
  keyed by the delivery id so a repeat is answered 200; no run state and no handler work.

Throughput: `wrk` with pre-signed requests, each with its own delivery id, when `wrk` is
installed, in THROUGHPUT_ROUNDS rounds that alternate the two servers (each round on a
fresh server and store), reporting each server's median, so that a burst of other load on
a shared machine does not land on one server only; otherwise a few Python client
processes, each holding keep-alive connections and writing pre-rendered HTTP/1.1 requests
(an HTTP client library's own bookkeeping would be the bottleneck, not the servers).
Latency: an open-loop sender at a fixed 1,000 deliveries/s, measuring from each request's
scheduled send time to its 2xx (so a stall is not hidden by the sender waiting on it).
End to end: after each receiver round, the time until its dispatcher has run the handler
calls of every delivery it stored, and the new deliveries per second of load plus that
drain: the rate it keeps up with, handler work done, beside the rate it answers at.

Footprint: `listener serve` itself, from its own command with a SQLite store, one source
and one handler: its start-up time (spawn to the first 200 from /readyz, median of
FOOTPRINT_STARTS), and its resident memory (RSS) idle and after FOOTPRINT_DELIVERIES
deliveries, once its dispatcher has run their handler calls.

Workers: `listener serve --workers N` on PostgreSQL (a fresh schema each time, the same
source and handler), N = 1, 2 and 4 in WORKER_ROUNDS alternating rounds, with the same
load; left out when PostgreSQL is unreachable.

Targets: receiver throughput at least 0.5x the bare endpoint's and 3x the peer's; p99
under 10 ms at 1,000/s. The script reports; it always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from listener.signatures import StandardWebhooks, generate_hmac_secret

THROUGHPUT_SECONDS = 8
THROUGHPUT_ROUNDS = 3
LATENCY_RATE = 1000
LATENCY_SECONDS = 5
WRK_CONNECTIONS = 32
WRK_THREADS = 2
CLIENT_CONCURRENCY = 16
TARGET_RATIO = 0.5
TARGET_PEER_RATIO = 3.0
TARGET_P99_MS = 10.0
# Servers measured for throughput, from the floor up; the targets compare the last with
# the first and with the peer.
KINDS = ("bare", "verify", "peer", "no-handlers", "receiver")
# How long a round waits for the receiver's dispatcher to run the handler calls left
# when the load stops.
DRAIN_LIMIT = 120.0
FOOTPRINT_STARTS = 5
FOOTPRINT_DELIVERIES = 100_000
# Enough unique requests that wrk never wraps around at several times the expected rate.
WRK_REQUESTS = 160_000

WRK_SCRIPT = r"""
local requests = {}
local counter = 0
local n = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

function init(args)
  local file = io.open(args[1], "rb")
  local data = file:read("*a")
  file:close()
  local threads = tonumber(args[2])
  local i = 0
  for chunk in string.gmatch(data, "(.-)\30\30") do
    if i % threads == index then
      table.insert(requests, chunk)
    end
    i = i + 1
  end
end

function request()
  n = n + 1
  if n > #requests then
    n = 1
  end
  return requests[n]
end
"""


# -- payloads ------------------------------------------------------------------------------


def body_for(run_id: str) -> bytes:
    """A run.status delivery of a realistic size (~400 bytes)."""
    data = {
        "type": "run.status",
        "data": {
            "run_id": run_id,
            "provider": "local",
            "application": "routing-optimizer",
            "status": "succeeded",
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "metadata": {"instance": "latest", "duration_ms": 5123, "tags": ["bench"]},
        },
    }
    return json.dumps(data).encode()


def signed_request(scheme: StandardWebhooks, prefix: str, n: int) -> tuple[bytes, dict[str, str]]:
    body = body_for(f"{prefix}-run-{n}")
    headers = scheme.sign(body, msg_id=f"{prefix}-msg-{n}")
    headers["content-type"] = "application/json"
    return body, headers


def raw_request(body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        "POST /hooks/std HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- servers -------------------------------------------------------------------------------


def serve(kind: str, secret: str, db: str) -> None:
    """Run one server under test and print its port (the child process side)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from listener import Listener, RunEvent, Source

    source = Source("std", "local", StandardWebhooks([secret]))
    if kind == "bare":

        async def endpoint(request: Request) -> Response:
            await request.body()
            return Response(status_code=202)

        app = Starlette(routes=[Route("/hooks/{source}", endpoint, methods=["POST"])])
    elif kind == "verify":
        assert source.scheme is not None
        scheme = source.scheme

        async def verifying(request: Request) -> Response:
            body = await request.body()
            verified = scheme.verify(body, request.headers)
            source.parse(json.loads(body), delivery_id=f"std:{verified.msg_id}")
            return Response(status_code=202)

        app = Starlette(routes=[Route("/hooks/{source}", verifying, methods=["POST"])])
    elif kind == "peer":
        app = peer_app(secret, db)
    else:
        listener = Listener(store_url=f"sqlite:///{db}", sources=[source])
        if kind == "receiver":

            @listener.on_any(name="bench.handler")
            async def handler(event: RunEvent) -> None:
                pass

        app = listener.asgi()

    class PortServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.servers:
                port = self.servers[0].sockets[0].getsockname()[1]
                print(f"PORT {port}", flush=True)

    from listener.cli.serve import uvicorn_options
    from listener.config import ServerConfig

    server = ServerConfig(port=0, log_level="warning")
    config = uvicorn.Config(app, access_log=False, **uvicorn_options(server))
    # run() picks the event loop from the config ("auto": uvloop when installed), as the
    # listener's own `serve` command does; asyncio.run() here would always use asyncio's.
    PortServer(config).run()


def peer_app(secret: str, db: str) -> Any:
    """The receiver a user would write by hand: verify, insert, commit, answer."""
    import sqlite3

    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    webhook = Webhook(secret)
    # Autocommit: each INSERT is its own transaction, committed (and synced) before the
    # answer.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body TEXT NOT NULL)")

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        try:
            webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return Response(status_code=401)
        try:
            conn.execute(
                "INSERT INTO events (id, body) VALUES (?, ?)",
                (request.headers["webhook-id"], body.decode()),
            )
        except sqlite3.IntegrityError:
            return Response(status_code=200)  # a repeat of a stored delivery
        return Response(status_code=202)

    return Starlette(routes=[Route("/hooks/{source}", endpoint, methods=["POST"])])


def server_stack() -> str:
    """The event loop uvicorn's "auto" setting picks here, and the HTTP protocol."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn, {loop} loop, httptools with the listener's limits"


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(kind: str, secret: str, db: str) -> Server:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--secret", secret, "--db", db],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"{kind} server did not start")
    return Server(process, f"http://127.0.0.1:{int(line.split()[1])}")


# -- load ----------------------------------------------------------------------------------


def write_requests(path: Path, secret: str) -> None:
    """WRK_REQUESTS signed deliveries for wrk, signed now: the receiver refuses a
    signature more than five minutes old, so a phase long after the first gets new ones."""
    scheme = StandardWebhooks([secret])
    prefix = uuid.uuid4().hex[:8]
    with path.open("wb") as out:
        for n in range(WRK_REQUESTS):
            out.write(raw_request(*signed_request(scheme, prefix, n)) + b"\x1e\x1e")


def wrk_throughput(url: str, requests_file: Path, script: Path) -> tuple[float, int]:
    """Requests per second and the count of non-2xx answers, as wrk reports them."""
    result = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{WRK_CONNECTIONS}",
            f"-d{THROUGHPUT_SECONDS}s",
            "-s",
            str(script),
            url,
            "--",
            str(requests_file),
            str(WRK_THREADS),
        ],
        capture_output=True,
        text=True,
        timeout=THROUGHPUT_SECONDS + 30,
        check=False,
    )
    rate, errors = 0.0, 0
    for line in result.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            rate = float(line.split()[1])
        if "Non-2xx or 3xx responses:" in line:
            errors = int(line.split()[-1])
    return rate, errors


def client_worker(url: str, secret: str, prefix: str, seconds: float) -> tuple[int, int]:
    """One load process: keep-alive connections sending unique signed deliveries."""

    async def run() -> tuple[int, int]:
        scheme = StandardWebhooks([secret])
        ok = failed = 0
        counter = 0
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal ok, failed, counter
            connection = await RawConnection.open(url)
            try:
                while time.monotonic() < deadline:
                    counter += 1
                    request = raw_request(*signed_request(scheme, prefix, counter))
                    if 200 <= await connection.send(request) < 300:
                        ok += 1
                    else:
                        failed += 1
            finally:
                connection.close()

        await asyncio.gather(*(loop() for _ in range(CLIENT_CONCURRENCY)))
        return ok, failed

    return asyncio.run(run())


def client_count(url: str, secret: str, prefix: str, count: int) -> int:
    """One load process: `count` unique signed deliveries over keep-alive connections;
    returns how many were answered 2xx."""

    async def run() -> int:
        scheme = StandardWebhooks([secret])
        numbers = iter(range(count))
        ok = 0

        async def loop() -> None:
            nonlocal ok
            connection = await RawConnection.open(url)
            try:
                for n in numbers:
                    request = raw_request(*signed_request(scheme, prefix, n))
                    if 200 <= await connection.send(request) < 300:
                        ok += 1
            finally:
                connection.close()

        await asyncio.gather(*(loop() for _ in range(CLIENT_CONCURRENCY)))
        return ok

    return asyncio.run(run())


def client_throughput(url: str, secret: str) -> tuple[float, int]:
    processes = max(2, min(4, os.cpu_count() or 2))
    prefix = uuid.uuid4().hex[:8]
    with ProcessPoolExecutor(processes) as pool:
        started = time.monotonic()
        futures = [
            pool.submit(client_worker, url, secret, f"{prefix}{n}", THROUGHPUT_SECONDS)
            for n in range(processes)
        ]
        results = [future.result() for future in futures]
        elapsed = time.monotonic() - started
    ok = sum(r[0] for r in results)
    return ok / elapsed, sum(r[1] for r in results)


class RawConnection:
    """One keep-alive HTTP/1.1 connection sending pre-rendered requests.

    The latency run uses this rather than an HTTP client library so the measurement is of
    the server, not of a client's connection pool bookkeeping.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def paced_latency(url: str, secret: str) -> tuple[float, float, int]:
    """p50 and p99 milliseconds from scheduled send to 2xx at LATENCY_RATE per second."""
    scheme = StandardWebhooks([secret])
    prefix = uuid.uuid4().hex[:8]
    count = LATENCY_RATE * LATENCY_SECONDS
    prepared = [raw_request(*signed_request(scheme, f"lat{prefix}", n)) for n in range(count)]
    latencies: list[float] = []
    failures = 0
    # Open the connections before the clock starts; more are opened if all are busy.
    idle = [await RawConnection.open(url) for _ in range(32)]

    async def send(request: bytes, scheduled: float) -> None:
        nonlocal failures
        connection = idle.pop() if idle else await RawConnection.open(url)
        try:
            status = await connection.send(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            failures += 1
            connection.close()
            return
        idle.append(connection)
        if 200 <= status < 300:
            latencies.append(time.perf_counter() - scheduled)
        else:
            failures += 1

    tasks = []
    start = time.perf_counter() + 0.05
    for n, request in enumerate(prepared):
        scheduled = start + n / LATENCY_RATE
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(request, scheduled)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    if not latencies:
        return float("nan"), float("nan"), failures
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000, failures


def warm_up(url: str, secret: str) -> None:
    scheme = StandardWebhooks([secret])
    prefix = f"warm{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=url) as client:
        for n in range(300):
            body, headers = signed_request(scheme, prefix, n)
            client.post("/hooks/std", content=body, headers=headers)


def accepted_count(url: str) -> dict[str, float]:
    """Deliveries by outcome, and handler calls that ran ("handled"), from the receiver's
    own metrics."""
    text = httpx.get(f"{url}/metrics").text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("listener_deliveries_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            found[outcome] = found.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
        if line.startswith("listener_handler_calls_total{") and 'outcome="ok"' in line:
            found["handled"] = found.get("handled", 0.0) + float(line.rsplit(" ", 1)[1])
    return found


# -- footprint -----------------------------------------------------------------------------

HANDLER_PLUGIN = """
from listener import Handlers, RunEvent

handlers = Handlers()


@handlers.on_any(name="bench.handler")
async def handler(event: RunEvent) -> None:
    pass
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()[0] if value.split() else "0"
    return int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0))


class ServeProcess:
    """`listener serve` from its own command, on a config in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        secret: str,
        name: str,
        *,
        store_url: str | None = None,
        workers: int = 1,
    ) -> None:
        plugin = workdir / "bench_handlers.py"
        plugin.write_text(HANDLER_PLUGIN)
        config = workdir / f"{name}.toml"
        store = store_url or f"sqlite:///{workdir / name}.db"
        config.write_text(
            "[listener]\n"
            f"store = {json.dumps(store)}\n"
            f'plugins = ["{plugin}"]\n'
            "[sources.std]\n"
            'provider = "local"\n'
            'scheme = "standard-webhooks"\n'
            'secrets = ["env:BENCH_WEBHOOK_SECRET"]\n'
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "BENCH_WEBHOOK_SECRET": secret}
        command = [sys.executable, "-m", "listener", "--config", str(config), "serve"]
        self.log = workdir / f"{name}.log"
        self.started = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *command,
                    *("--port", str(self.port), "--log-level", "warning"),
                    *("--workers", str(workers)),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> float:
        """Seconds from spawn to the first 200 from /readyz (polled every 10 ms, 30 s at most)."""
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            for _ in range(3000):
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                if self.process.poll() is not None:
                    break
                time.sleep(0.01)
        tail = self.log.read_text(errors="replace")[-500:]
        raise RuntimeError(f"listener serve did not become ready: {tail}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def drain_seconds(url: str, accepted: float) -> float:
    """Seconds until the handler calls of `accepted` deliveries (one each, counted from
    the server's start) have all run, or -1 if not within DRAIN_LIMIT seconds."""
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_LIMIT:
        if accepted_count(url).get("handled", 0.0) >= accepted:
            return time.monotonic() - started
        time.sleep(0.05)
    return -1.0


def wait_handled(url: str, count: int) -> float:
    """Handler calls that ran, once `count` have or after 120 s at most."""
    handled = 0.0
    for _ in range(1200):
        handled = accepted_count(url).get("handled", 0.0)
        if handled >= count:
            break
        time.sleep(0.1)
    return handled


def footprint(workdir: Path, secret: str) -> dict[str, Any]:
    starts = []
    for n in range(FOOTPRINT_STARTS):
        serve = ServeProcess(workdir, secret, f"start-{n}")
        try:
            starts.append(serve.wait_ready())
        finally:
            serve.stop()
    serve = ServeProcess(workdir, secret, "footprint")
    try:
        serve.wait_ready()
        warm_up(serve.url, secret)
        time.sleep(1.0)
        idle, _ = rss_kib(serve.process.pid)
        processes = max(2, min(4, os.cpu_count() or 2))
        share = FOOTPRINT_DELIVERIES // processes
        prefix = uuid.uuid4().hex[:8]
        started = time.monotonic()
        with ProcessPoolExecutor(processes) as pool:
            futures = [
                pool.submit(client_count, serve.url, secret, f"fp{prefix}{n}", share)
                for n in range(processes)
            ]
            accepted = sum(future.result() for future in futures)
        sent_seconds = time.monotonic() - started
        handled = wait_handled(serve.url, accepted + 300)
        after, peak = rss_kib(serve.process.pid)
    finally:
        serve.stop()
    return {
        "start_median": statistics.median(starts),
        "starts": starts,
        "idle_kib": idle,
        "after_kib": after,
        "peak_kib": peak,
        "deliveries": accepted,
        "handled": handled,
        "sent_seconds": sent_seconds,
    }


# -- workers on PostgreSQL ----------------------------------------------------------------

WORKER_COUNTS = (1, 2, 4)
WORKER_ROUNDS = 2


def workers_phase(
    workdir: Path, secret: str, load: Callable[[str], tuple[float, int]]
) -> dict[int, list[tuple[float, int]]] | str:
    """Deliveries a second through `listener serve --workers N` on PostgreSQL (a fresh
    schema each time), N from WORKER_COUNTS in alternating rounds, with the count of
    answers that were not 2xx; or why not measured."""
    import psycopg
    from store import DEFAULT_POSTGRES_URL, with_search_path

    base = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(base, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable ({type(exc).__name__})"
    rates: dict[int, list[tuple[float, int]]] = {n: [] for n in WORKER_COUNTS}
    for round_number in range(WORKER_ROUNDS):
        for workers in WORKER_COUNTS:
            schema = f"bench_{uuid.uuid4().hex}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            serve = ServeProcess(
                workdir,
                secret,
                f"workers-{workers}-{round_number}",
                store_url=with_search_path(base, schema),
                workers=workers,
            )
            try:
                serve.wait_ready()
                warm_up(serve.url, secret)
                rates[workers].append(load(serve.url))
            finally:
                serve.stop()
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return rates


# -- main ------------------------------------------------------------------------------------


def main(*, allow_wrk: bool = True) -> int:
    bench_started = time.monotonic()
    secret = generate_hmac_secret()
    workdir = Path(tempfile.mkdtemp(prefix="listener-bench-"))
    use_wrk = allow_wrk and shutil.which("wrk") is not None
    requests_file = workdir / "requests.bin"
    script = workdir / "signed.lua"
    results: dict[str, dict[str, Any]] = {}
    try:
        if use_wrk:
            write_requests(requests_file, secret)
            script.write_text(WRK_SCRIPT)
        loader = (
            f"wrk ({WRK_THREADS} threads, {WRK_CONNECTIONS} connections)"
            if use_wrk
            else "Python client processes on keep-alive connections"
        )
        print(f"load generator: {loader}; {os.cpu_count()} CPUs; loopback only")
        print(f"servers: {server_stack()}")

        for kind in ("bare", "receiver"):
            # Latency first, on a fresh store: after the throughput run the dispatcher has a
            # backlog of handler calls that would compete with the deliveries measured.
            server = start(kind, secret, str(workdir / f"{kind}-latency.db"))
            try:
                warm_up(server.url, secret)
                p50, p99, failures = asyncio.run(paced_latency(server.url, secret))
            finally:
                server.stop()
            results[kind] = {"p50": p50, "p99": p99, "latency_failures": failures}
        rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for n in range(THROUGHPUT_ROUNDS):
            if use_wrk and n > 0:
                write_requests(requests_file, secret)  # signatures younger than five minutes
            for kind in KINDS:
                server = start(kind, secret, str(workdir / f"{kind}-throughput-{n}.db"))
                stored = kind in ("no-handlers", "receiver")
                drained = 0.0
                try:
                    warm_up(server.url, secret)
                    before = accepted_count(server.url) if stored else {}
                    if use_wrk:
                        rate, errors = wrk_throughput(server.url, requests_file, script)
                    else:
                        rate, errors = client_throughput(server.url, secret)
                    after = accepted_count(server.url) if stored else {}
                    if kind == "receiver":
                        drained = drain_seconds(server.url, after.get("accepted", 0.0))
                finally:
                    server.stop()
                counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                # Deliveries whose handler calls have all run, per second of load and drain
                # (the load's own seconds: wrk's start-up, reading its requests, is not load).
                whole, accepted = 0.0, counted.get("accepted", 0)
                if accepted > 0 and rate > 0 and drained >= 0:
                    whole = accepted / (accepted / rate + drained)
                rounds[kind].append(
                    {"rate": rate, "errors": errors, **counted, "drained": drained, "whole": whole}
                )
        for kind, runs in rounds.items():
            middle = sorted(runs, key=lambda run: run["rate"])[len(runs) // 2]
            results.setdefault(kind, {})
            results[kind].update(
                rate=middle["rate"],
                errors=sum(run["errors"] for run in runs),
                rates=[run["rate"] for run in runs],
                accepted=middle.get("accepted", 0),
                duplicate=middle.get("duplicate", 0),
                handled=middle.get("handled", 0),
                drained=middle.get("drained", 0.0),
                whole=[run.get("whole", 0.0) for run in runs],
            )
        fp = footprint(workdir, secret)

        if use_wrk:
            write_requests(requests_file, secret)

        def load(url: str) -> tuple[float, int]:
            if use_wrk:
                return wrk_throughput(url, requests_file, script)
            return client_throughput(url, secret)

        by_workers = workers_phase(workdir, secret, load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    bare, receiver = results["bare"], results["receiver"]
    print()
    header = f"{'endpoint':<12} {'deliveries/s':>13} {'x bare':>7} {'non-2xx':>8}"
    print(f"{header} {'p50 ms':>8} {'p99 ms':>8}")
    print("-" * 61)
    for name in KINDS:
        row = results[name]
        share = row["rate"] / bare["rate"] if bare["rate"] else 0.0
        failures = row["errors"] + row.get("latency_failures", 0)
        timing = f"{row['p50']:>8.2f} {row['p99']:>8.2f}" if "p50" in row else f"{'-':>8} {'-':>8}"
        print(f"{name:<12} {row['rate']:>13.0f} {share:>7.2f} {failures:>8.0f} {timing}")
    print(f"(latency at {LATENCY_RATE}/s open loop for {LATENCY_SECONDS} s)")
    for name in KINDS:
        row = results[name]
        shown = ", ".join(f"{rate:.0f}" for rate in row["rates"])
        print(
            f"{name} deliveries/s in {THROUGHPUT_ROUNDS} rounds of {THROUGHPUT_SECONDS} s: {shown}"
        )
    print(
        f"receiver, median round: stored {receiver['accepted']:.0f} new deliveries and "
        f"{receiver['duplicate']:.0f} duplicates; its dispatcher ran {receiver['handled']:.0f}"
        f" handler calls meanwhile and the rest in {receiver['drained']:.1f} s after the load"
        " (-1: not within the limit)"
    )
    end_to_end = ", ".join(f"{rate:.0f}" for rate in receiver["whole"])
    print(
        "receiver end to end (new deliveries whose handler calls have all run, per second"
        f" of load and drain) in each round: {end_to_end}"
    )
    starts = ", ".join(f"{start:.2f}" for start in fp["starts"])
    print(
        f"listener serve: start-up {fp['start_median']:.2f} s (spawn to ready; {starts});"
        f" RSS idle {fp['idle_kib'] / 1024:.0f} MiB, after {fp['deliveries']:,} deliveries"
        f" ({fp['sent_seconds']:.0f} s, {fp['handled']:.0f} handler calls run)"
        f" {fp['after_kib'] / 1024:.0f} MiB, peak {fp['peak_kib'] / 1024:.0f} MiB"
    )
    if isinstance(by_workers, str):
        print(f"listener serve --workers N on PostgreSQL: not measured: {by_workers}")
    else:
        single = statistics.median(r for r, _ in by_workers[1]) if by_workers[1] else 0.0
        for workers, measured in by_workers.items():
            rate = statistics.median(r for r, _ in measured)
            shown = ", ".join(f"{r:.0f}" for r, _ in measured)
            refused = sum(e for _, e in measured)
            share = rate / single if single else 0.0
            print(
                f"listener serve --workers {workers} on PostgreSQL: {rate:.0f} deliveries/s"
                f" ({share:.2f}x one worker; rounds {shown}; {refused} not 2xx)"
            )
    print()
    ratio = receiver["rate"] / bare["rate"] if bare["rate"] else 0.0
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"{verdict}  receiver at least {TARGET_RATIO}x the bare endpoint: {ratio:.2f}x")
    peer = results["peer"]
    peer_ratio = receiver["rate"] / peer["rate"] if peer["rate"] else 0.0
    verdict = "PASS" if peer_ratio >= TARGET_PEER_RATIO else "FAIL"
    print(
        f"{verdict}  receiver at least {TARGET_PEER_RATIO:g}x the hand-written peer: "
        f"{peer_ratio:.2f}x"
    )
    verdict = "PASS" if receiver["p99"] < TARGET_P99_MS else "FAIL"
    print(
        f"{verdict}  receiver p99 under {TARGET_P99_MS:g} ms at {LATENCY_RATE}/s: "
        f"{receiver['p99']:.2f} ms"
    )
    print(f"bench took {time.monotonic() - bench_started:.0f} s")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=KINDS)
    parser.add_argument("--secret")
    parser.add_argument("--db")
    parser.add_argument("--no-wrk", action="store_true", help="use Python clients even with wrk")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.secret, args.db)
        sys.exit(0)
    try:
        main(allow_wrk=not args.no_wrk)
    except Exception as exc:  # report, never fail the caller
        print(f"bench failed: {type(exc).__name__}: {exc}")
    sys.exit(0)
