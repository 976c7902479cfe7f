"""The operator page against a hostile web: a page reload held to the token's rate,
sign-out refused to another site (over HTTP, and in Chromium from a page on another
site), no cookie signed with a known key when ``ui_secret`` is blank, the cookie
``Secure`` when the browser is on HTTPS behind a proxy the server does not trust."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from platform_helpers import ADMIN, READ, WRITE, Running, auth, build_app
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS

from voxtra.platform.serve import PlatformServer
from voxtra.platform.store.repository import token_digest
from voxtra.testing import FakeAsterisk

ORIGIN = "http://platform.test"


async def sign_in(rig: Running, token: str, origin: str = ORIGIN) -> Any:
    return await rig.client.post("/ui/login", data={"token": token}, headers={"Origin": origin})


async def test_reloading_the_page_spends_the_tokens_rate(running: Callable[..., Any]) -> None:
    # GET /ui reads the live calls, the recent ones and each campaign's progress, as the
    # stream does: it skipped the token's rate, 10 reloads of 10 answered with a rate of
    # 0.1 a second and a burst of 2.
    rig: Running = await running(platform={"rate_limit": 0.1, "rate_burst": 2})
    assert (await sign_in(rig, READ)).status_code == 303
    codes = [(await rig.client.get("/ui")).status_code for _ in range(4)]
    assert codes[-1] == 429, codes
    assert (await rig.client.get("/v1/calls", headers=auth(READ))).status_code == 429


async def test_another_site_cannot_sign_the_operator_out(running: Callable[..., Any]) -> None:
    rig: Running = await running()
    assert (await sign_in(rig, WRITE)).status_code == 303
    cookie = rig.client.cookies["voxtra_ui"]
    # Another site's form: the browser sends no cookie with it (SameSite=Strict), and
    # the answer's Set-Cookie cleared the operator's all the same.
    rig.client.cookies.clear()
    forged = await rig.client.post("/ui/logout", headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    rig.client.cookies.set("voxtra_ui", cookie, path="/ui")
    assert (await rig.client.get("/ui")).status_code == 200
    # without a cookie from this origin: nothing to check, the (absent) cookie cleared
    rig.client.cookies.clear()
    own = await rig.client.post("/ui/logout", headers={"Origin": ORIGIN})
    assert own.status_code == 303 and own.headers["location"] == "/ui/login"


def _forged(key: bytes, name: str, digest: str) -> str:
    """A session cookie for the token ``name`` of ``digest``, signed with ``key``."""
    body = json.dumps(
        {"n": name, "d": digest[:16], "s": "forged", "e": int(time.time()) + 3600},
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, b"session\x00" + body, hashlib.sha256).digest()
    return ".".join(base64.urlsafe_b64encode(p).decode().rstrip("=") for p in (body, mac))


async def test_a_blank_ui_secret_is_no_known_signing_key(running: Callable[..., Any]) -> None:
    # `ui_secret: ${UI_SECRET}` with UI_SECRET set but empty: the settings hold "" and
    # the key was sha256(b"voxtra-ui:"), known to all; with a token's digest (the
    # api_tokens table, a `sha256:` in the settings) anyone made an admin session.
    rig: Running = await running(platform={"ui_secret": ""})
    public = hashlib.sha256(b"voxtra-ui:").digest()
    rig.client.cookies.set("voxtra_ui", _forged(public, "ops", token_digest(ADMIN)), path="/ui")
    assert (await rig.client.get("/ui")).status_code == 303
    rig.client.cookies.clear()
    assert (await sign_in(rig, ADMIN)).status_code == 303  # the page still signs in
    assert (await rig.client.get("/ui")).status_code == 200


async def test_the_cookie_is_secure_when_the_browser_is_on_https(
    running: Callable[..., Any],
) -> None:
    # A TLS proxy uvicorn does not trust (only loopback unless FORWARDED_ALLOW_IPS
    # names it: a proxy in another container) forwards plain HTTP; the browser's
    # Origin still says https, and the cookie went out without Secure.
    rig: Running = await running()
    signed = await sign_in(rig, READ, origin="https://platform.test")
    assert signed.status_code == 303
    assert "Secure" in signed.headers["set-cookie"], signed.headers["set-cookie"]
    rig.client.cookies.clear()
    plain = await sign_in(rig, READ)
    assert plain.status_code == 303 and "Secure" not in plain.headers["set-cookie"]


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium, as in test_ui_browser (skipped without it, failed in CI)."""
    reason = None
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} not found (Debian package chromium: scripts/bootstrap)"
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "the playwright package is not installed (the dev extra)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"headless Chromium is required in CI: {reason}", pytrace=False)
        pytest.skip(f"headless Chromium unavailable: {reason}")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_a_page_on_another_site_does_not_sign_the_operator_out(
    fake_asterisk: FakeAsterisk, tmp_path: Path, chromium: Any
) -> None:
    app = build_app(tmp_path)
    app.use_transport(fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/ui.db", port=0)
    await server.start()
    url = server.url  # http://127.0.0.1:port: another site than attacker.test
    try:
        context = await chromium.new_context()
        await context.route(
            "http://attacker.test/**",
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<form id="f" method="post" action="{url}/ui/logout"></form>'
                "<script>document.getElementById('f').submit()</script>",
            ),
        )
        page = await context.new_page()
        page.set_default_timeout(20_000)  # generous: a loaded 2-core box
        await page.goto(f"{url}/ui/login")
        await page.fill("#token", READ)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{url}/ui")

        visit = await context.new_page()
        async with visit.expect_response(f"{url}/ui/logout") as answered:
            await visit.goto("http://attacker.test/")
        assert (await answered.value).status == 403
        assert [c["name"] for c in await context.cookies()] == ["voxtra_ui"]
        await page.reload()
        assert page.url == f"{url}/ui"  # still signed in
        await context.close()
    finally:
        await server.stop()
