"""The operator page's sign-in, session cookie, CSRF checks and escaping, over HTTP (no
browser): who is refused, what the cookie says, and that a token never lands in a URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from platform_helpers import ADMIN, READ, WRITE, Running, auth

from voxtra.platform.store.calls import CallRecord
from voxtra.platform.store.repository import token_digest
from voxtra.platform.ui import render, session

ORIGIN = "http://platform.test"


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/ui/login", data={"token": token}, headers={"Origin": ORIGIN})


async def live_call(rig: Running) -> str:
    made = await rig.client.post(
        "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
    )
    assert made.status_code == 201, made.text
    call_id: str = made.json()["call_id"]
    await rig.wait_status(call_id, "in_progress")
    return call_id


async def test_unauthenticated_requests_are_sent_to_sign_in_or_refused(
    running: Callable[..., Any],
) -> None:
    rig: Running = await running()
    client = rig.client
    page = await client.get("/ui")
    assert page.status_code == 303 and page.headers["location"] == "/ui/login"
    for method, path in (
        ("GET", "/ui/stream"),
        ("GET", "/ui/calls/call_x/recording"),
        ("POST", "/ui/calls/call_x/hangup"),
        ("POST", "/ui/campaigns/camp_x/pause"),
    ):
        refused = await client.request(method, path)
        assert refused.status_code == 401, (path, refused.text)
    # a bearer header does not open the page's routes: they take the session only
    assert (await client.get("/ui/stream", headers=auth(ADMIN))).status_code == 401
    form = await client.get("/ui/login")
    assert form.status_code == 200 and 'method="post"' in form.text
    assert "script-src 'self'" in form.headers["content-security-policy"]

    wrong = await sign_in(client, "not-a-token-0123456789")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    client.cookies.set("voxtra_ui", "eyJuIjoib3BzIn0.AAAA", path="/ui")  # unsigned
    assert (await client.get("/ui")).status_code == 303
    client.cookies.clear()
    elsewhere = await client.post(
        "/ui/login", data={"token": WRITE}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers


async def test_a_token_becomes_a_strict_httponly_session(running: Callable[..., Any]) -> None:
    rig: Running = await running()
    signed = await sign_in(rig.client, WRITE)
    assert signed.status_code == 303 and signed.headers["location"] == "/ui"
    cookie = signed.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age="):
        assert attribute in cookie, cookie
    assert WRITE not in cookie and WRITE not in signed.headers["location"]
    page = await rig.client.get("/ui")
    assert page.status_code == 200 and "signed in as <b>writer</b>" in page.text
    assert WRITE not in page.text


async def test_actions_need_the_csrf_token_and_the_scope(running: Callable[..., Any]) -> None:
    rig: Running = await running()
    call_id = await live_call(rig)
    await sign_in(rig.client, WRITE)
    page = (await rig.client.get("/ui")).text
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert csrf and f'data-url="/ui/calls/{call_id}/hangup"' in page
    url = f"/ui/calls/{call_id}/hangup"
    assert (await rig.client.post(url)).status_code == 403  # no token
    assert (await rig.client.post(url, headers={"X-CSRF-Token": "x" + csrf})).status_code == 403
    other = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert (await rig.client.post(url, headers=other)).status_code == 403
    still = await rig.client.get(f"/v1/calls/{call_id}", headers=auth(READ))
    assert still.json()["status"] == "in_progress"
    done = await rig.client.post(url, headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert done.status_code == 200, done.text
    await rig.wait_status(call_id, "completed")
    again = await rig.client.post(url, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409  # the API's own answer: the call has ended

    # a read-only token sees the page without buttons, and may not act
    rig.client.cookies.clear()
    second = await live_call(rig)
    await sign_in(rig.client, READ)
    page = (await rig.client.get("/ui")).text
    assert f'data-call-id="{second}"' in page and "data-action" not in page
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    refused = await rig.client.post(f"/ui/calls/{second}/hangup", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403 and "calls:write" in refused.json()["detail"]

    signed_out = await rig.client.post("/ui/logout", data={"csrf": csrf})
    assert signed_out.status_code == 303
    assert (await rig.client.get("/ui")).status_code == 303


async def test_markup_is_escaped_in_the_rendered_page(running: Callable[..., Any]) -> None:
    rig: Running = await running()
    await rig.fake.incoming("1000", caller='"><script>alert(1)</script>')
    await rig.fake.wait_until(lambda: bool(rig.handled), timeout=5)
    await rig.settle()
    await sign_in(rig.client, READ)
    page = (await rig.client.get("/ui")).text
    assert "<script>alert(1)" not in page
    assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_sessions_follow_the_secret_and_the_token(running: Callable[..., Any]) -> None:
    rig: Running = await running(platform={"ui_secret": "a-shared-secret-of-the-workers"})
    keys = session.SessionKeys(rig.platform)
    made = keys.login(WRITE)
    assert made is not None and made[0] == "writer"
    cookie = made[1]
    # another worker with the same ui_secret takes the session; another secret does not
    assert session.SessionKeys(rig.platform).session(cookie) is not None
    rig.platform.settings = rig.platform.settings.model_copy(update={"ui_secret": None})
    assert session.SessionKeys(rig.platform).session(cookie) is None
    # the token rotated in the settings: its sessions end
    name, _, scopes = rig.platform.tokens[1]
    rig.platform.tokens[1] = (name, token_digest("a-new-writer-token-0123456789"), scopes)
    assert keys.session(cookie) is None


async def test_failed_sign_ins_are_slowed_down(running: Callable[..., Any]) -> None:
    rig: Running = await running()
    codes = [(await sign_in(rig.client, f"guess-{i:020d}")).status_code for i in range(20)]
    assert codes[:10] == [401] * 10 and 429 in codes  # a burst of 10, then 1 per 2 s
    assert (await sign_in(rig.client, READ)).status_code == 303  # the right token still works


async def test_the_page_shows_each_calls_backend(running: Callable[..., Any]) -> None:
    rig: Running = await running()
    call_id = await live_call(rig)
    await sign_in(rig.client, READ)
    page = (await rig.client.get("/ui")).text
    card = page.split(f'data-call-id="{call_id}"', 1)[1].split("</header>", 1)[0]
    assert "outbound · asterisk · hello" in card
    assert "<th>backend</th>" in page and 'colspan="8"' in page

    ended = CallRecord(
        id="call_tw", direction="inbound", status="completed", backend="twilio", duration=2.0
    )
    _, row = render.recent_row(ended)
    assert "<td>inbound</td><td>twilio</td>" in row
    older = CallRecord(id="call_old", direction="outbound", status="completed", backend=None)
    assert "<td>outbound</td><td>asterisk</td>" in render.recent_row(older)[1]


async def test_the_page_spends_the_tokens_rate_as_the_api_does(
    running: Callable[..., Any],
) -> None:
    # The page's routes call the API's functions; they skipped its rate limit, so a
    # token held to its rate by the API could sign in once and read without limit.
    rig: Running = await running(platform={"rate_limit": 0.1, "rate_burst": 2})
    assert (await sign_in(rig.client, READ)).status_code == 303
    codes = [(await rig.client.get("/ui/calls/call_nope/recording")).status_code for _ in range(6)]
    assert 429 in codes and codes[-1] == 429
    refused = await rig.client.get("/ui/calls/call_nope/recording")
    assert int(refused.headers["retry-after"]) >= 1
    assert (await rig.client.get("/v1/calls", headers=auth(READ))).status_code == 429


async def test_a_csrf_token_of_any_text_is_refused_not_a_500(
    running: Callable[..., Any],
) -> None:
    rig: Running = await running()
    await sign_in(rig.client, WRITE)
    call_id = await live_call(rig)
    sent = await rig.client.post(
        f"/ui/calls/{call_id}/hangup",
        headers={"Origin": ORIGIN, "X-CSRF-Token": "\u00e9t\u00e9".encode("latin-1")},
    )
    assert sent.status_code == 403
