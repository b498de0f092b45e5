"""The console in a real browser: the distribution's headless Chromium, driven by
Playwright. Screenshots go to build/console-screenshots/ (not committed).

Outside CI a machine without Chromium or Playwright skips these, saying why; under
CI=true they fail instead, so a missing browser cannot pass unnoticed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from console.support import ADMIN_TOKEN, READ_TOKEN, Served
from listener import RunStatus
from listener.store import CallState

# The distribution's Chromium; LISTENER_TEST_CHROMIUM names another build.
CHROMIUM = Path(os.environ.get("LISTENER_TEST_CHROMIUM") or "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "build" / "console-screenshots"


def _unavailable() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the dev extra)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(params=["sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # One backend is enough here: the pages' queries run on both in test_app.py.
    return f"sqlite:///{tmp_path / 'console.db'}"


async def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def log_in(browser: Any, served: Served, token: str) -> Any:
    page = await browser.new_page()
    await page.goto(served.url + "/ui/runs")
    assert page.url.endswith("/ui/login")
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/runs")
    return page


async def test_log_in_filter_and_open_a_timeline(browser: Any, served: Served) -> None:
    for i in range(4):
        status = RunStatus.SUCCEEDED if i % 2 else RunStatus.RUNNING
        await served.record(f"run-{i}", status, delivery_id=f"d{i}")
    page = await log_in(browser, served, READ_TOKEN)
    await page.select_option("select[name=status]", "succeeded")
    await page.click("form.filters >> text=Filter")
    await page.wait_for_url("**status=succeeded**")
    runs = await page.locator("#runs td:first-child").all_inner_texts()
    assert runs == ["run-3", "run-1"]
    await shot(page, "runs-filtered")
    await page.click("text=run-3")
    await page.wait_for_url("**/ui/run?id=run-3")
    assert await page.inner_text("#learned-by") == "webhook"
    assert "moved to succeeded" in await page.inner_text("#timeline")
    await shot(page, "timeline")


async def test_replay_a_dead_letter_and_see_it_done(browser: Any, served: Served) -> None:
    await served.record("run-9", RunStatus.FAILED, delivery_id="d-end")
    store = served.listener.store

    async def dead() -> bool:
        return bool((await store.list_calls(state=CallState.DEAD)).items)

    await wait_for(dead, "a dead letter")
    call_id = (await store.list_calls(state=CallState.DEAD)).items[0].id
    served.failing["on"] = False
    page = await log_in(browser, served, ADMIN_TOKEN)
    await page.click("nav >> text=Dead letters")
    row = page.locator(f'tr[data-call="{call_id}"]')
    assert await row.locator(".state").inner_text() == "dead"
    await shot(page, "dead-letters")
    await row.locator("button", has_text="Replay").click()
    # Back to the same list, its filter kept.
    await page.wait_for_url("**/ui/calls?state=dead")
    # The live refresh takes it off the dead letters, and the list of all calls shows it
    # done once the dispatcher has run it.
    await row.wait_for(state="detached", timeout=15_000)
    await page.click("nav >> text=Handler calls")
    await page.locator(f'tr[data-call="{call_id}"] .state', has_text="done").wait_for(
        timeout=15_000
    )
    await shot(page, "replayed")
    await page.click("nav >> text=Audit")
    assert "replay call" in await page.inner_text("main")


async def test_a_hostile_run_id_and_payload_run_no_script(browser: Any, served: Served) -> None:
    hostile = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>'
    await served.record(
        hostile,
        RunStatus.FAILED,
        delivery_id='"><svg onload=window.__xss=3>',
        application="<script>alert(4)</script>",
        payload={"note": "</pre><script>window.__xss=5;alert(5)</script>", "x": "';alert(6)//"},
    )
    await served.listener.store.record_unroutable(
        source="std",
        delivery_id="<b>u</b>",
        reason="<script>window.__xss=7</script>",
        body=b"<img src=x onerror=alert(8)>",
        headers={"content-type": "<script>alert(9)</script>"},
    )
    page = await log_in(browser, served, ADMIN_TOKEN)
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    for path in ("/ui/runs", "/ui/calls", "/ui/deliveries", "/ui/audit"):
        await page.goto(served.url + path)
        await page.wait_for_load_state("load")
    await page.goto(served.url + "/ui/runs")
    await page.locator("#runs a").first.click()
    await page.wait_for_url("**/ui/run?id=**")
    await page.click("details summary")
    # Let the live refresh replace the timeline at least once.
    await page.wait_for_timeout(1200)
    await shot(page, "hostile-timeline")
    assert hostile in await page.inner_text("h1")
    assert "window.__xss=5" in (await page.text_content("#timeline") or "")
    assert await page.evaluate("window.__xss === undefined")
    assert await page.locator("#timeline script, #timeline img, h1 img").count() == 0
    assert dialogs == []


async def test_pages_read_the_same_with_javascript_off(browser: Any, served: Served) -> None:
    await served.record("run-1", RunStatus.SUCCEEDED, delivery_id="d1")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(served.url + "/ui/login")
    await page.fill("input[name=token]", READ_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/runs")
    assert await page.locator("#runs td:first-child").all_inner_texts() == ["run-1"]
    await page.click("text=run-1")
    assert "moved to succeeded" in await page.inner_text("#timeline")
    await shot(page, "no-javascript")
    await context.close()
