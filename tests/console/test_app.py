"""The console over HTTP: a real listener on loopback, real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from helpers import serve, wait_for
from starlette.applications import Starlette
from starlette.routing import Mount

from console.support import ADMIN_TOKEN, READ_TOKEN, Served
from listener import Origin, RunEvent, RunStatus
from listener.cli.serve import service_app
from listener.config import load_config
from listener.console import ConsoleSettings
from listener.console.app import console_app
from listener.store import CallState

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
READ = {"authorization": f"Bearer {READ_TOKEN}"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


async def dead_call(served: Served, run_id: str = "run-1") -> int:
    await served.record(run_id, RunStatus.FAILED, delivery_id=f"{run_id}-end")
    store = served.listener.store

    async def dead() -> bool:
        return bool((await store.list_calls(state=CallState.DEAD, run_id=run_id)).items)

    await wait_for(dead, "a dead letter")
    return (await store.list_calls(state=CallState.DEAD, run_id=run_id)).items[0].id


async def test_the_console_is_not_mounted_without_a_token(tmp_path: Path) -> None:
    config = load_config(None, env={"LISTENER_STORE": f"sqlite:///{tmp_path / 'x.db'}"})
    routes = [getattr(route, "path", "") for route in service_app(config).routes]
    assert "/hooks/{source}" in routes
    assert "/ui" not in routes


async def test_pages_need_a_token(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        page = await client.get("/ui/runs")
        assert page.status_code == 303
        assert page.headers["location"].endswith("/ui/login")
        assert (
            await client.get("/ui/runs", headers={"authorization": "Bearer nope"})
        ).status_code == 401
        assert (await client.get("/ui/runs?part=rows")).status_code == 401
        login = await client.get("/ui/login")
        assert login.status_code == 200
        assert "script-src 'self'" in login.headers["content-security-policy"]


async def test_login_sets_a_strict_http_only_cookie_that_is_not_the_token(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        refused = await client.post("/ui/login", data={"token": "wrong-token-000000000000"})
        assert refused.status_code == 401
        assert "not valid" in refused.text
        answer = await client.post("/ui/login", data={"token": READ_TOKEN})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert "path=/ui" in cookie.lower()
        assert READ_TOKEN not in cookie
        page = await client.get("/ui/runs")
        assert page.status_code == 200
        assert "read (" in page.text
        # The read role sees no action.
        assert 'name="csrf"' not in page.text
        out = await client.post("/ui/logout")
        assert out.status_code == 303
        assert (await client.get("/ui/runs")).status_code == 303


async def test_runs_are_filtered_and_paged_newest_first(served: Served) -> None:
    for i in range(7):
        status = RunStatus.SUCCEEDED if i % 2 else RunStatus.RUNNING
        app = "routing" if i < 5 else "pricing"
        await served.record(f"run-{i}", status, delivery_id=f"d{i}", application=app)
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        found = [
            m
            for m in re.findall(
                r">(run-\d)</a>", (await client.get("/ui/runs?application=routing")).text
            )
        ]
        assert found == ["run-4", "run-3", "run-2", "run-1", "run-0"]
        done = (await client.get("/ui/runs?status=succeeded")).text
        assert re.findall(r">(run-\d)</a>", done) == ["run-5", "run-3", "run-1"]
        assert "run-6" not in (await client.get("/ui/runs?provider=nextmv")).text
        bad = await client.get("/ui/runs?status=nope")
        assert bad.status_code == 400
        assert "is not one of" in bad.text
        find = await client.get("/ui/runs?run_id=run-3")
        assert find.status_code == 303
        assert find.headers["location"].endswith("/ui/run?id=run-3")


async def test_runs_pages_follow_the_keyset_cursor(served: Served) -> None:
    for i in range(5):
        await served.record(f"run-{i}", RunStatus.RUNNING, delivery_id=f"d{i}")
    # The same started listener, under a console of two rows a page.
    small = console_app(served.listener, ConsoleSettings(read_token=READ_TOKEN, page_size=2))
    async with (
        serve(Starlette(routes=[Mount("/ui", app=small)]), lifespan="off") as url,
        httpx.AsyncClient(base_url=url, headers=READ) as client,
    ):
        page = (await client.get("/ui/runs")).text
        seen: list[str] = []
        pages = 0
        while True:
            pages += 1
            seen += re.findall(r">(run-\d)</a>", page)
            more = re.search(r'href="(\?[^"]*cursor=[^"]+)" rel="next"', page)
            if more is None:
                break
            page = (await client.get("/ui/runs" + more.group(1).replace("&amp;", "&"))).text
        assert seen == ["run-4", "run-3", "run-2", "run-1", "run-0"]
        assert pages == 3
        assert (await client.get("/ui/runs?cursor=bogus")).status_code == 400


async def test_a_timeline_tells_the_whole_story(served: Served) -> None:
    await served.record("run-1", RunStatus.RUNNING, delivery_id="d-run")
    call_id = await dead_call(served)
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        page = await client.get("/ui/run", params={"id": "run-1"})
        assert page.status_code == 200
        text = page.text
        assert "moved to running" in text
        assert "moved to failed" in text
        assert "handler flaky: dead" in text
        assert f"call {call_id}, attempts 1" in text
        assert "flaky refused run-1" in text
        assert '<dd id="learned-by">webhook</dd>' in text
        part = await client.get("/ui/run", params={"id": "run-1", "part": "timeline"})
        assert "<html" not in part.text
        assert "moved to failed" in part.text
        missing = await client.get("/ui/run", params={"id": "nope"})
        assert missing.status_code == 404


async def test_an_admin_replays_a_dead_letter_and_it_is_audited(served: Served) -> None:
    call_id = await dead_call(served)
    served.failing["on"] = False
    async with httpx.AsyncClient(base_url=served.url) as client:
        await client.post("/ui/login", data={"token": ADMIN_TOKEN})
        page = await client.get("/ui/calls?state=dead")
        assert f'data-call="{call_id}"' in page.text
        csrf = csrf_of(page.text)
        # Without the session's CSRF token: refused, nothing replayed.
        refused = await client.post("/ui/calls/replay", data={"call_id": str(call_id)})
        assert refused.status_code == 403
        wrong = await client.post("/ui/calls/replay", data={"call_id": str(call_id), "csrf": "00"})
        assert wrong.status_code == 403
        assert (await served.listener.store.get_call(call_id)).state is CallState.DEAD  # type: ignore[union-attr]
        done = await client.post("/ui/calls/replay", data={"call_id": str(call_id), "csrf": csrf})
        assert done.status_code == 303

        async def replayed() -> bool:
            call = await served.listener.store.get_call(call_id)
            return call is not None and call.state is CallState.DONE

        await wait_for(replayed, "the replayed call to be done")
        call = await served.listener.store.get_call(call_id)
        assert call is not None
        assert call.last_duration is not None
        row = re.search(
            rf'data-call="{call_id}".*?<td class="took">([^<]*)</td>',
            (await client.get("/ui/calls?state=done")).text,
            re.S,
        )
        assert row is not None
        assert re.fullmatch(r"\d+ ms|\d+\.\d s", row.group(1))
        audit = (await served.listener.store.list_audit()).items
        assert [(a.action, a.count, a.detail) for a in audit] == [
            ("replay call", 1, {"call_ids": [call_id]})
        ]
        assert audit[0].actor.startswith("admin (")
        assert "replay call" in (await client.get("/ui/audit")).text
        for away in ("//evil.example/x", "/\\evil.example/x", "https://evil.example/"):
            answer = await client.post(
                "/ui/calls/replay", data={"call_id": str(call_id), "csrf": csrf, "back": away}
            )
            assert answer.status_code == 303
            assert answer.headers["location"].endswith("/ui/calls")
            await wait_for(replayed, "the replayed call to be done")
        missing = await client.post("/ui/calls/replay", data={"call_id": "999999", "csrf": csrf})
        assert missing.status_code == 409
        assert "nothing replayed" in missing.text


async def test_the_read_role_cannot_act(served: Served) -> None:
    call_id = await dead_call(served)
    async with httpx.AsyncClient(base_url=served.url) as client:
        await client.post("/ui/login", data={"token": READ_TOKEN})
        answer = await client.post("/ui/calls/replay", data={"call_id": str(call_id), "csrf": "x"})
        assert answer.status_code == 403
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        answer = await client.post("/ui/calls/replay", data={"call_id": str(call_id)})
        assert answer.status_code == 403
    assert (await served.listener.store.list_audit()).items == []


async def test_replay_by_filter_counts_first_then_replays_what_it_counted(served: Served) -> None:
    for i in range(3):
        await dead_call(served, f"run-{i}")
    async with httpx.AsyncClient(base_url=served.url, headers=ADMIN) as client:
        form = await client.get("/ui/replay")
        assert form.status_code == 200
        dry = await client.post(
            "/ui/replay", data={"state": "dead", "handler": "flaky", "since": "1h"}
        )
        assert dry.status_code == 200
        assert "3 calls would be replayed (dry run)" in dry.text
        assert (await served.listener.store.list_audit()).items == []
        until = re.search(r'name="until" value="([^"]+)"', dry.text)
        since = re.search(r'name="since" value="([^"]+)"', dry.text)
        assert until is not None
        assert since is not None
        # A call dead after the count is outside the fixed window.
        served.failing["on"] = True
        await dead_call(served, "run-late")
        served.failing["on"] = False
        done = await client.post(
            "/ui/replay",
            data={
                "state": "dead",
                "handler": "flaky",
                "since": since.group(1),
                "until": until.group(1).replace("&#43;", "+"),
                "confirm": "yes",
            },
        )
        assert "3 of 3 calls pending again" in done.text
        audit = (await served.listener.store.list_audit()).items
        assert [(a.action, a.count) for a in audit] == [("replay by filter", 3)]
        assert audit[0].detail["filter"]["handlers"] == ["flaky"]
        bad = await client.post("/ui/replay", data={"state": "pending"})
        assert bad.status_code == 400
        assert "cannot be replayed" in bad.text
        unknown = await client.post("/ui/replay", data={"handler": "nobody"})
        assert unknown.status_code == 400


async def test_unroutable_deliveries_show_no_credentials_and_can_be_reprocessed(
    served: Served,
) -> None:
    store = served.listener.store
    await store.record_unroutable(
        source="std",
        delivery_id="u-1",
        reason="payload not understood",
        body=b'{"weird": "<b>bold</b>"}',
        headers={"content-type": "application/json", "authorization": "Bearer s3cret-value"},
    )
    async with httpx.AsyncClient(base_url=served.url, headers=ADMIN) as client:
        page = await client.get("/ui/deliveries")
        assert page.status_code == 200
        assert "payload not understood" in page.text
        assert "s3cret-value" not in page.text
        assert "authorization" not in page.text
        assert "&lt;b&gt;bold&lt;/b&gt;" in page.text
        dry = await client.post("/ui/unroutable/reprocess", data={})
        assert "Dry run: of 1 read, 0 now read as events, 1 still not understood" in dry.text
        done = await client.post("/ui/unroutable/reprocess", data={"confirm": "yes"})
        assert "Of 1 read, 0 recorded" in done.text
    audit = (await store.list_audit()).items
    assert [(a.action, a.count) for a in audit] == [("reprocess unroutable", 0)]


async def test_the_health_strip_counts_backlog_and_dead_letters(served: Served) -> None:
    await dead_call(served)
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        strip = await client.get("/ui/health?part=strip")
        assert strip.status_code == 200
        assert "dead letters: 1" in strip.text
        assert "ends (24 h): 1 (webhook 1)" in strip.text
        assert "backlog: 0" in strip.text


@pytest.mark.parametrize("name", ["live.js", "console.css"])
async def test_static_files_are_served(served: Served, name: str) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        answer = await client.get(f"/ui/static/{name}")
        assert answer.status_code == 200
        assert (await client.get("/ui/static/../app.py")).status_code == 404


async def test_deliveries_are_filtered_by_origin_and_run(served: Served) -> None:
    await served.record("run-a", RunStatus.RUNNING, delivery_id="hook-a")
    await served.listener.record(
        RunEvent(
            delivery_id="poll-b",
            provider="local",
            application="routing",
            run_id="run-b",
            status=RunStatus.RUNNING,
            origin=Origin.POLL,
            payload={},
        )
    )
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        everything = (await client.get("/ui/deliveries")).text
        assert "hook-a" in everything
        assert "poll-b" in everything
        polled = (await client.get("/ui/deliveries?origin=poll")).text
        assert "poll-b" in polled
        assert "hook-a" not in polled
        one = (await client.get("/ui/deliveries?run_id=run-a")).text
        assert "hook-a" in one
        assert "poll-b" not in one
        assert (await client.get("/ui/deliveries?origin=carrier-pigeon")).status_code == 400


async def test_refused_deliveries_are_listed_without_what_the_sender_wrote(
    served: Served,
) -> None:
    body = b'{"id": "<script>run-9</script>", "status": "succeeded"}'
    async with httpx.AsyncClient(base_url=served.url) as client:
        forged = await client.post(
            "/hooks/std",
            content=body,
            headers={
                "webhook-id": "msg-forged",
                "webhook-timestamp": "1700000000",
                "webhook-signature": "v1,AAAA",
            },
        )
        assert forged.status_code == 401
        assert (await client.post("/hooks/nowhere", content=b"{}")).status_code == 404
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        page = (await client.get("/ui/deliveries")).text
    rows = re.findall(r'<tr class="refusal">(.*?)</tr>', page, re.S)
    assert len(rows) == 2
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in rows]
    # Newest first: the unknown source, then the bad signature.
    assert [c[1:3] for c in cells] == [["(unknown)", "404"], ["std", "401"]]
    assert cells[0][3] == "unknown_source"
    assert cells[1][3] == json.loads(forged.text)["error"]
    assert "run-9" not in page
    assert "msg-forged" not in page


async def test_an_admin_backfills_a_handler_over_past_transitions(served: Served) -> None:
    store = served.listener.store
    # A failure recorded before `flaky` was registered: no call of it.
    await store.record(RunEvent("old-end", "local", "routing", "old", RunStatus.FAILED))
    async with httpx.AsyncClient(base_url=served.url) as client:
        await client.post("/ui/login", data={"token": ADMIN_TOKEN})
        page = await client.get("/ui/backfill")
        assert '<option value="flaky"' in page.text
        csrf = csrf_of(page.text)
        bad = await client.post("/ui/backfill", data={"csrf": csrf, "handler": "flaky"})
        assert bad.status_code == 400
        assert "since: give the start of the window" in bad.text
        form = {"csrf": csrf, "handler": "flaky", "since": "1h"}
        dry = await client.post("/ui/backfill", data={**form, "confirm": "no"})
        assert "Dry run: 1 of 1 transitions in the window match flaky." in dry.text
        assert (await store.list_calls(run_id="old")).items == []
        fixed = dict(re.findall(r'name="(since|until)" value="([^"]+)"', dry.text))
        done = await client.post("/ui/backfill", data={**form, **fixed, "confirm": "yes"})
        assert "1 calls of flaky enqueued; 0 transitions had one already." in done.text
        again = await client.post("/ui/backfill", data={**form, **fixed, "confirm": "yes"})
        assert "0 calls of flaky enqueued; 1 transitions had one already." in again.text
    calls = (await store.list_calls(run_id="old")).items
    assert [c.handler for c in calls] == ["flaky"]
    audit = (await store.list_audit()).items
    assert [(a.action, a.count) for a in audit] == [("backfill", 0), ("backfill", 1)]
    async with httpx.AsyncClient(base_url=served.url, headers=READ) as client:
        assert (await client.post("/ui/backfill", data=form)).status_code == 403
