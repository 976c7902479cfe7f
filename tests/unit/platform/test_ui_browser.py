"""The operator page (``/ui``) in a real headless Chromium, driven by Playwright.

``PlatformServer`` (what ``voxtra serve`` runs) on FakeAsterisk with the scripted
providers, listening on a real socket: sign in, watch a voice call's transcript turns
and per-turn latency arrive, hang it up from the page, play its recording in the
recent calls, see a campaign's counts and pause/resume another; and a caller id and a
transcript full of markup rendered as text. Debian's ``chromium`` (scripts/bootstrap);
skipped without it, failed under CI. ``VOXTRA_UI_SCREENSHOT=docs/img/operator-page.png``
saves the page with the live call.

The first test takes about 10 s on a loaded 2-core box: two spoken turns through the
voice pipeline (about 2 s each, end of speech included), a campaign's four attempts, a
recording delivered after the hang-up. It covers in one served app what would
otherwise be five such start-ups; the second takes about 4 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_helpers import ADMIN, READ, WRITE, auth, build_app

from voxtra.calls.session import CallSession
from voxtra.pipeline.io import MonotonicClock
from voxtra.platform.engine import ScaledClock, service
from voxtra.platform.serve import PlatformServer
from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

CHROMIUM = os.environ.get("VOXTRA_CHROMIUM", "/usr/bin/chromium")
# --disable-background-networking and friends: without them Chromium keeps calling
# Google's services, which on a machine without a route out means retries all along.
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI and in the sandbox container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--mute-audio",
]
TONE = b"\x80\x00" * 4000  # 0.5 s of loud 8 kHz PCM16: the caller speaks


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"headless Chromium unavailable: {reason}")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A fresh headless Chromium (Playwright launches it with a new temporary profile)."""
    if shutil.which(CHROMIUM) is None:
        _unavailable(f"{CHROMIUM} not found (Debian package chromium: scripts/bootstrap)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (the dev extra)")
    async with async_playwright() as playwright:
        try:
            chromium = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except Exception as exc:  # the driver or the browser would not start
            _unavailable(f"Chromium did not start: {exc}")
        try:
            yield chromium
        finally:
            await chromium.close()


async def _serve(
    fake: FakeAsterisk, tmp_path: Path, stt: list[str], replies: list[str]
) -> tuple[PlatformServer, list[CallSession]]:
    clock = MonotonicClock()
    app = build_app(
        tmp_path,
        stt=ScriptedSTT(stt, clock, delay=0.01),
        llm=ScriptedLLM([Reply([r]) for r in replies], clock, delay=0),
        tts=ScriptedTTS(clock, ms_per_char=5, first_byte=0),
        vad=EnergyVAD(),
    )
    answered: list[CallSession] = []

    @app.route("2000", name="agent")
    async def agent(call: CallSession) -> None:
        answered.append(call)
        await call.converse()

    @app.route("3000", name="bye")
    async def bye(call: CallSession) -> None:
        await call.answer()
        await asyncio.sleep(0.05)
        await call.hangup()

    app.use_transport(fake)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/ui.db", port=0)
    await server.start()
    return server, answered


async def _sign_in(browser: Any, url: str, token: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)  # generous: a loaded 2-core box
    await page.goto(f"{url}/ui")
    assert page.url == f"{url}/ui/login"  # not signed in: sent to the form
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{url}/ui")
    await page.wait_for_selector("#conn.up")  # the live stream is open
    return page


async def _speak(fake: FakeAsterisk, call: CallSession) -> None:
    far_end = fake.call(call.id)
    await far_end.wait_until(lambda c: bool(c.media_ends), timeout=10)
    far_end.send_audio(TONE)


async def test_operator_follows_a_call_hangs_it_up_and_steers_campaigns(
    fake_asterisk: FakeAsterisk,
    tmp_path: Path,
    browser: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="voxtra")
    caplog.set_level(logging.INFO, logger="uvicorn")
    server, answered = await _serve(
        fake_asterisk,
        tmp_path,
        ["what are your opening hours", "and on saturday"],
        ["We are open nine to five.", "Saturdays ten to two."],
    )
    worker = service.worker_of(server.platform)
    worker.clock = ScaledClock(60, start=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    worker.poll_interval = 2.0  # of the clock's time: 1/30 s
    fake_asterisk.endpoint_outcomes.update({"PJSIP/b1": "busy", "PJSIP/n1": "noanswer"})
    try:
        async with httpx.AsyncClient(base_url=server.url) as api:
            page = await _sign_in(browser, server.url, WRITE)

            # a campaign that runs to its end: its counts per outcome on the page
            done = await api.post(
                "/v1/campaigns",
                headers=auth(WRITE),
                json={
                    "name": "renewals",
                    "route": "bye",
                    "retry": {"max_attempts": 1},
                    "contacts": [
                        {"to": t} for t in ("PJSIP/a1", "PJSIP/a2", "PJSIP/b1", "PJSIP/n1")
                    ],
                },
            )
            assert done.status_code == 201, done.text
            # and one not due yet: pause and resume it from the page
            later = await api.post(
                "/v1/campaigns",
                headers=auth(WRITE),
                json={
                    "name": "winback",
                    "route": "bye",
                    "start_at": "2027-06-01T09:00:00Z",
                    "contacts": [{"to": "PJSIP/w1"}, {"to": "PJSIP/w2"}],
                },
            )
            assert later.status_code == 201, later.text
            renewals = page.locator(f'article[data-campaign-id="{done.json()["campaign_id"]}"]')
            await renewals.locator(".status.finished").wait_for()
            counts = {
                (await li.get_attribute("data-outcome")): int(await li.locator("b").inner_text())
                for li in await renewals.locator("li.count").all()
            }
            assert counts == {"completed": 2, "busy": 1, "no_answer": 1}
            assert "4 of 4 contacts done" in await renewals.inner_text()
            winback = page.locator(f'article[data-campaign-id="{later.json()["campaign_id"]}"]')
            await winback.locator("button[data-action=pause]").click()
            await winback.locator(".status.paused").wait_for()
            await winback.locator("button[data-action=resume]").click()
            await winback.locator(".status.running").wait_for()

            # a live voice call: it appears, its turns arrive one by one with latency
            created = await api.post(
                "/v1/calls",
                headers=auth(WRITE),
                json={
                    "to": "PJSIP/alice",
                    "from": "Acme <+4930999>",
                    "route": "agent",
                    "record": True,
                },
            )
            assert created.status_code == 201, created.text
            call_id = created.json()["call_id"]
            card = page.locator(f'#live article[data-call-id="{call_id}"]')
            await card.wait_for()
            await fake_asterisk.wait_until(lambda: bool(answered), timeout=10)
            await _speak(fake_asterisk, answered[0])
            await card.locator(".turn.agent").first.wait_for()
            assert await card.locator(".turn.caller .text").all_inner_texts() == [
                "what are your opening hours"
            ]
            latency = card.locator(".turn.agent .latency").first
            assert (await latency.inner_text()).split()[1] == "ms"
            assert "STT" in await latency.inner_text()
            # the second turn reaches the open page through the stream, no reload
            fake_asterisk.call(answered[0].id).send_audio(TONE)
            await card.locator(".turn.agent").nth(1).wait_for()
            texts = await card.locator(".turn .text").all_inner_texts()
            assert texts == [
                "what are your opening hours",
                "We are open nine to five.",
                "and on saturday",
                "Saturdays ten to two.",
            ]
            if shot := os.environ.get("VOXTRA_UI_SCREENSHOT"):
                await page.screenshot(path=shot, full_page=True)

            # hang it up from the page: it leaves the live calls for the recent ones
            await card.locator("button[data-action=hangup]").click()
            await card.wait_for(state="detached")
            row = page.locator(f'#recent-rows tr[data-call-id="{call_id}"]')
            await row.locator(".status.completed").wait_for()
            audio = row.locator("audio")
            await audio.wait_for(timeout=20_000)  # the recording is delivered after the end
            playable = await audio.evaluate(
                """(a) => new Promise((done) => {
                    a.addEventListener("loadedmetadata", () => done({duration: a.duration}));
                    a.addEventListener("error", () => done({error: a.error && a.error.code}));
                    a.preload = "metadata"; a.load();
                })"""
            )
            assert playable.get("duration", 0) > 0, playable
            await page.close()
            stored = (await api.get(f"/v1/calls/{call_id}", headers=auth(READ))).json()
            assert stored["status"] == "completed"
    finally:
        await server.stop()
    # the token went in a form body, never in a URL or a log line
    assert all(WRITE not in r.getMessage() for r in caplog.records)


async def test_markup_from_callers_is_shown_as_text(
    fake_asterisk: FakeAsterisk, tmp_path: Path, browser: Any
) -> None:
    said = "<script>window.pwned = 'transcript'</script>"
    caller = '<img src=x onerror="window.pwned=1">'
    server, answered = await _serve(fake_asterisk, tmp_path, [said], ["<b>bold</b> & done"])
    try:
        page = await _sign_in(browser, server.url, ADMIN)
        await fake_asterisk.incoming("2000", caller=caller)
        card = page.locator("#live article.call")
        await card.wait_for()
        await fake_asterisk.wait_until(lambda: bool(answered), timeout=10)
        await _speak(fake_asterisk, answered[0])
        await card.locator(".turn.agent").wait_for()  # arrived through the stream
        for view in ("streamed", "server-rendered"):
            assert await card.locator(".turn.caller .text").inner_text() == said, view
            assert await card.locator(".turn.agent .text").inner_text() == "<b>bold</b> & done"
            assert await card.locator(".from").inner_text() == caller, view
            assert await page.locator("#live script, #live img, #live b").count() == 0, view
            assert await page.evaluate("window.pwned") is None, view
            await page.reload()
            await card.locator(".turn.agent").wait_for()
        await page.close()
        await fake_asterisk.call(answered[0].id).hang_up()
    finally:
        await server.stop()
