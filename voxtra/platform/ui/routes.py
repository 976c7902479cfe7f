"""``/ui``: the operator page and what it reads and does.

``GET /ui`` renders the page on the server (it works without script); its script then
follows ``GET /ui/stream``, one server-sent event stream per page that sends the
sections again when they change: calls in progress with their turns and per-turn
latency (``live``), each ended call's row (``recent``), campaign progress
(``campaigns``). Actions reuse the API's own handlers, so their checks and errors are
the API's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Iterable
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from sqlalchemy import select

from voxtra.platform.api import calls as calls_api
from voxtra.platform.api import campaigns as campaigns_api
from voxtra.platform.api.auth import Caller, platform_of, spend
from voxtra.platform.api.problems import Problem
from voxtra.platform.engine import admin
from voxtra.platform.notify import CallNotifier
from voxtra.platform.platform import Platform
from voxtra.platform.store.calls import FINAL_STATUSES, CallRecord, TranscriptTurn
from voxtra.platform.store.campaigns import Campaign
from voxtra.platform.store.db import shielded
from voxtra.platform.ui import render
from voxtra.platform.ui.session import COOKIE, SESSION_SECONDS, Session, keys_of, same_origin

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)

PlatformDep = Annotated[Platform, Depends(platform_of)]

LIVE_LIMIT = 50
RECENT_LIMIT = 20
CAMPAIGN_LIMIT = 10
TICK = 1.0
"""Seconds between the stream's store reads when no live call woke it (a new call, or
one handled by another worker, wakes nothing here)."""
STREAM_SPAN = 5.0
"""Seconds one stream response lasts before the browser reconnects (``retry``). uvicorn
waits for open responses at shutdown: an endless stream would hold ``voxtra serve``'s
SIGTERM for as long as a page is open; a reconnect also checks the session again."""

_SECURITY_HEADERS = {
    # No inline script or style anywhere: injected markup could not run even if it
    # slipped past the escaping.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; media-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" with
    # the page's own form posts, and the origin check refused the sign-in.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)


def _session(request: Request, platform: Platform) -> Session | None:
    return keys_of(platform).session(request.cookies.get(COOKIE))


def _need(request: Request, platform: Platform, scope: str, *, action: bool = False) -> Session:
    """The request's session holding ``scope``; for an action, its CSRF token too."""
    session = _session(request, platform)
    if session is None:
        raise Problem(401, "not signed in to the operator page (POST /ui/login)")
    if not session.allows(scope):
        raise Problem(403, f"this session's token lacks the scope {scope!r}")
    if action:
        sent = request.headers.get("x-csrf-token", "")
        if not same_origin(request) or not sent or not _same(sent, session.csrf):
            raise Problem(403, "missing or wrong CSRF token")
    # The session's token's rate, as through the API: the page calls the same functions
    # (a recording download, the stream's queries), and skipped it.
    spend(request, session.token_name)
    return session


def _same(sent: str, csrf: str) -> bool:
    """The CSRF token sent is the session's, compared in constant time (as bytes: a
    header may hold any Latin-1 text, which compare_digest refuses as str)."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), csrf.encode())


def _caller(session: Session) -> Caller:
    return Caller(session.token_name, session.scopes)


# -- data ------------------------------------------------------------------------------


async def _live(platform: Platform) -> tuple[list[CallRecord], dict[str, list[TranscriptTurn]]]:
    async with platform.db.session() as db:
        found = list(
            (
                await db.scalars(
                    select(CallRecord)
                    .where(CallRecord.status.not_in([s.value for s in FINAL_STATUSES]))
                    .order_by(CallRecord.created_at.desc())
                    .limit(LIVE_LIMIT)
                )
            ).all()
        )
        turns: dict[str, list[TranscriptTurn]] = {c.id: [] for c in found}
        if found:
            for turn in await db.scalars(
                select(TranscriptTurn)
                .where(TranscriptTurn.call_id.in_(list(turns)))
                .order_by(TranscriptTurn.call_id, TranscriptTurn.seq)
            ):
                turns[turn.call_id].append(turn)
    return found, turns


async def _recent(platform: Platform) -> list[CallRecord]:
    async with platform.db.session() as db:
        return list(
            (
                await db.scalars(
                    select(CallRecord)
                    .where(CallRecord.status.in_([s.value for s in FINAL_STATUSES]))
                    .order_by(CallRecord.created_at.desc(), CallRecord.id.desc())
                    .limit(RECENT_LIMIT)
                )
            ).all()
        )


async def _campaigns(platform: Platform) -> list[render.CampaignView]:
    async with platform.db.session() as db:
        found = (
            await db.scalars(
                select(Campaign).order_by(Campaign.created_at.desc()).limit(CAMPAIGN_LIMIT)
            )
        ).all()
        views = []
        for campaign in found:
            progress = await admin.campaign_progress(db, campaign.id)
            views.append(
                render.CampaignView(
                    campaign.id,
                    campaign.name,
                    campaign.status,
                    int(progress["total"]),
                    dict(progress["contacts"]),
                    dict(progress["attempts"]),
                )
            )
    return views


async def _wait_any(notifier: CallNotifier, call_ids: Iterable[str], timeout: float) -> None:
    """Until a write about one of ``call_ids`` (or ``timeout``)."""
    waiters = [asyncio.ensure_future(notifier.wait(cid, timeout)) for cid in call_ids]
    if not waiters:
        await asyncio.sleep(timeout)
        return
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


# -- pages -----------------------------------------------------------------------------


@router.get("")
async def operator_page(request: Request, platform: PlatformDep) -> Response:
    session = _session(request, platform)
    if session is None:
        return RedirectResponse("/ui/login", status_code=303, headers=_SECURITY_HEADERS)
    if not session.allows("calls:read"):
        return _page(render.login_page("This token lacks the scope calls:read."), 403)
    # The stream's reads at once (each campaign's progress among them): a reload spent
    # nothing of the token's rate, 10 in a row answered at a rate of 0.5 a second.
    spend(request, session.token_name)
    can_act = session.allows("calls:write")
    live, turns = await _live(platform)
    rows = [render.recent_row(c)[1] for c in await _recent(platform)]
    return _page(
        render.operator_page(
            user=session.token_name,
            csrf=session.csrf,
            live=render.live_section(live, turns, can_act),
            recent=rows,
            campaigns=render.campaigns_section(await _campaigns(platform), can_act),
        )
    )


@router.get("/login")
async def login_form() -> Response:
    return _page(render.login_page())


@router.post("/login")
async def login(request: Request, platform: PlatformDep) -> Response:
    if not same_origin(request):
        return _page(render.login_page("Sign in from this server's own page."), 403)
    client = request.client.host if request.client else "?"
    async with request.form(max_files=0, max_fields=4) as form:
        token = form.get("token")
    keys = keys_of(platform)
    found = keys.login(token) if isinstance(token, str) and token.strip() else None
    if found is None:
        if keys.failures.take(client) > 0:
            return _page(render.login_page("Too many failed sign-ins: wait a minute."), 429)
        return _page(render.login_page("Unknown token."), 401)
    name, cookie = found
    session = keys.session(cookie)
    if session is None or not session.allows("calls:read"):
        return _page(render.login_page(f"The token {name!r} lacks the scope calls:read."), 403)
    response = RedirectResponse("/ui", status_code=303, headers=_SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path="/ui",
        # Or the browser's page is (its Origin, this host's): behind a TLS proxy uvicorn
        # does not trust (only loopback, unless FORWARDED_ALLOW_IPS names it: a proxy in
        # another container) the request is http here, and the cookie went without it.
        secure=request.url.scheme == "https"
        or request.headers.get("origin", "").startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(request: Request, platform: PlatformDep) -> Response:
    # First, whatever the session: another site's form carries no cookie (SameSite), so
    # there was no CSRF token to check, and its answer cleared the operator's cookie
    # (Chromium, a form on another site posting here).
    if not same_origin(request):
        raise Problem(403, "sign out from this server's own page")
    session = _session(request, platform)
    async with request.form(max_files=0, max_fields=4) as form:
        sent = form.get("csrf")
    if session is not None and (not isinstance(sent, str) or not _same(sent, session.csrf)):
        raise Problem(403, "missing or wrong CSRF token")
    response = RedirectResponse("/ui/login", status_code=303, headers=_SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


_STATIC = {"operator.js": "text/javascript", "operator.css": "text/css"}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise Problem(404, f"no file {name!r}")
    text = resources.files("voxtra.platform.ui").joinpath("static", name).read_text("utf-8")
    return Response(
        text,
        media_type=_STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# -- the live stream -------------------------------------------------------------------


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


@router.get("/stream")
async def stream(request: Request, platform: PlatformDep) -> StreamingResponse:
    session = _need(request, platform, "calls:read")
    can_act = session.allows("calls:write")

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent_live: str | None = None
        sent_rows: dict[str, str] = {}
        sent_campaigns: str | None = None
        yield "retry: 1000\n\n"
        # Every read shielded: a disconnect's cancel cut them short, their sessions
        # unclosed (see shielded).
        while True:
            live, turns = await shielded(_live(platform))
            html = render.live_section(live, turns, can_act)
            if html != sent_live:
                sent_live = html
                yield _event("live", {"html": html})
            for call in reversed(await shielded(_recent(platform))):
                version, row = render.recent_row(call)
                if sent_rows.get(call.id) != version:
                    sent_rows[call.id] = version
                    yield _event("recent", {"id": call.id, "v": version, "html": row})
            html = render.campaigns_section(await shielded(_campaigns(platform)), can_act)
            if html != sent_campaigns:
                sent_campaigns = html
                yield _event("campaigns", {"html": html})
            if loop.time() - started >= STREAM_SPAN or await request.is_disconnected():
                return
            await _wait_any(platform.notifier, [c.id for c in live], TICK)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- recordings and actions ------------------------------------------------------------


@router.get("/calls/{call_id}/recording")
async def recording(call_id: str, request: Request, platform: PlatformDep) -> Any:
    session = _need(request, platform, "calls:read")
    return await calls_api.get_recording(call_id, platform, _caller(session), download=True)


@router.post("/calls/{call_id}/hangup")
async def hangup(call_id: str, request: Request, platform: PlatformDep) -> dict[str, str]:
    session = _need(request, platform, "calls:write", action=True)
    detail = await calls_api.hangup_call(call_id, platform, _caller(session))
    return {"call_id": detail.call_id, "status": detail.status}


@router.post("/campaigns/{campaign_id}/{action}")
async def steer(
    campaign_id: str,
    action: Literal["pause", "resume"],
    request: Request,
    platform: PlatformDep,
) -> dict[str, str]:
    session = _need(request, platform, "calls:write", action=True)
    steer_ = campaigns_api.pause if action == "pause" else campaigns_api.resume
    out = await steer_(campaign_id, platform, _caller(session))
    return {"campaign_id": out.campaign_id, "status": out.status}
