"""The operator page's HTML, built on the server; every value escaped by default.

Caller ids, transcripts, campaign names and route names come from outside (a SIP peer
sets its caller id, a caller says what they like): :func:`fmt` escapes every value it
is given unless it is already :class:`Html` (a fragment built here). The browser's
script only swaps such fragments in (``<template>`` parsing runs no script) and the
page's Content-Security-Policy allows scripts from ``/ui/static`` only.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from voxtra.platform.store.calls import CallRecord, TranscriptTurn

__all__ = [
    "CampaignView",
    "Html",
    "call_card",
    "campaigns_section",
    "esc",
    "fmt",
    "live_section",
    "login_page",
    "operator_page",
    "recent_row",
]


class Html(str):
    """Markup built by this module: inserted as is."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """``value`` as text in HTML (``<``, ``&``, quotes escaped), unless already Html."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def fmt(template: str, **values: Any) -> Html:
    """``template.format(**values)`` with every value escaped (see :func:`esc`)."""
    return Html(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Html]) -> Html:
    return Html("".join(parts))


def _path(segment: str) -> str:
    return quote(segment, safe="")


def _clock(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when is not None else ""


def _ms(value: Any) -> str:
    return f"{round(float(value))} ms" if isinstance(value, int | float) else "?"


def _latency(latency: dict[str, Any] | None) -> Html:
    if not latency or latency.get("total_ms") is None:
        return Html("")
    parts = [
        f"{label} {_ms(latency.get(key))}"
        for label, key in (("STT", "stt_ms"), ("LLM", "llm_ms"), ("TTS", "tts_ms"))
        if latency.get(key) is not None
    ]
    return fmt(
        '<span class="latency" title="end of speech to first audio">{total}'
        "<small>{parts}</small></span>",
        total=_ms(latency["total_ms"]),
        parts=" · ".join(parts),
    )


def _turn(turn: TranscriptTurn) -> Html:
    speaker = "agent" if turn.speaker == "agent" else "caller"
    return fmt(
        '<li class="turn {speaker}"><span class="who">{speaker}</span>'
        '<span class="text">{text}</span>{latency}{cut}</li>',
        speaker=speaker,
        text=turn.text,
        latency=_latency(turn.latency),
        cut=Html('<span class="cut">interrupted</span>') if turn.interrupted else Html(""),
    )


def _parties(call: CallRecord) -> Html:
    return fmt(
        '<span class="from">{from_}</span> <span class="arrow">→</span> '
        '<span class="to">{to}</span>',
        from_=call.from_ or ("unknown" if call.direction == "inbound" else "—"),
        to=call.to or "?",
    )


def _backend(call: CallRecord) -> str:
    # A row from before the backend column is an Asterisk call.
    return call.backend or "asterisk"


def call_card(call: CallRecord, turns: Sequence[TranscriptTurn], can_act: bool) -> Html:
    button = (
        fmt(
            '<button type="button" data-action="hangup" data-url="/ui/calls/{path}/hangup">'
            "Hang up</button>",
            path=_path(call.id),
        )
        if can_act
        else Html("")
    )
    body = (
        join(_turn(t) for t in turns)
        if turns
        else Html('<li class="turn none">no transcript yet</li>')
    )
    return fmt(
        '<article class="call" data-call-id="{id}"><header>{parties}'
        '<span class="status {status}">{label}</span><span class="meta">{direction}'
        " · {backend} · {route} · since {since}</span>{button}</header>"
        '<ol class="transcript">{body}</ol></article>',
        id=call.id,
        parties=_parties(call),
        status=call.status,
        label=call.status.replace("_", " "),
        direction=call.direction,
        backend=_backend(call),
        route=call.route or "default route",
        since=_clock(call.answered_at or call.started_at or call.created_at),
        button=button,
        body=body,
    )


def live_section(
    calls: Sequence[CallRecord], turns: dict[str, list[TranscriptTurn]], can_act: bool
) -> Html:
    cards = (
        join(call_card(c, turns.get(c.id, []), can_act) for c in calls)
        if calls
        else Html('<p class="empty">No call in progress.</p>')
    )
    return fmt(
        '<h2>Calls in progress <span class="n">{n}</span></h2>{cards}', n=len(calls), cards=cards
    )


def _p50(call: CallRecord) -> str:
    figures = (call.metrics or {}).get("latency_ms", {}).get("total_ms", {})
    return _ms(figures.get("p50")) if isinstance(figures, dict) and figures.get("p50") else ""


def recent_row(call: CallRecord) -> tuple[str, Html]:
    """(version, the ``<tr>``) of an ended call; the version changes with the row."""
    recording = (
        fmt(
            '<audio controls preload="none" src="/ui/calls/{path}/recording"></audio>',
            path=_path(call.id),
        )
        if call.recording
        else Html('<span class="none">none</span>')
    )
    cells = fmt(
        "<td>{when}</td><td>{direction}</td><td>{backend}</td><td>{parties}</td>"
        '<td><span class="status {status}">{label}</span></td><td>{duration}</td>'
        "<td>{p50}</td><td>{recording}</td>",
        when=_clock(call.ended_at or call.created_at),
        direction=call.direction,
        backend=_backend(call),
        parties=_parties(call),
        status=call.status,
        label=call.status.replace("_", " "),
        duration=f"{call.duration:.1f} s" if call.duration is not None else "",
        p50=_p50(call),
        recording=recording,
    )
    version = hashlib.sha256(cells.encode()).hexdigest()[:12]
    return version, fmt(
        '<tr data-call-id="{id}" data-v="{v}">{cells}</tr>', id=call.id, v=version, cells=cells
    )


@dataclass(frozen=True, slots=True)
class CampaignView:
    id: str
    name: str | None
    status: str
    total: int
    contacts: dict[str, int]
    attempts: dict[str, int]


_DONE = ("completed", "busy", "no_answer", "failed", "canceled")


def _campaign(view: CampaignView, can_act: bool) -> Html:
    done = sum(view.contacts.get(k, 0) for k in _DONE)
    counts = join(
        fmt(
            '<li class="count" data-outcome="{k}"><span>{label}</span><b>{n}</b></li>',
            k=k,
            label=k.replace("_", " "),
            n=n,
        )
        for k, n in sorted(view.contacts.items())
    )
    action = {"running": "pause", "paused": "resume"}.get(view.status)
    button = (
        fmt(
            '<button type="button" data-action="{action}" '
            'data-url="/ui/campaigns/{path}/{action}">{label}</button>',
            action=action,
            path=_path(view.id),
            label=action.capitalize(),
        )
        if action and can_act
        else Html("")
    )
    return fmt(
        '<article class="campaign" data-campaign-id="{id}"><header><strong>{name}</strong>'
        '<span class="status {status}">{label}</span>'
        '<span class="meta">{done} of {total} contacts done</span>{button}</header>'
        '<progress max="{total}" value="{done}"></progress><ul class="counts">{counts}</ul>'
        "</article>",
        id=view.id,
        name=view.name or view.id,
        status=view.status,
        label=view.status,
        done=done,
        total=view.total,
        button=button,
        counts=counts,
    )


def campaigns_section(views: Sequence[CampaignView], can_act: bool) -> Html:
    body = (
        join(_campaign(v, can_act) for v in views)
        if views
        else Html('<p class="empty">No campaign.</p>')
    )
    return fmt("<h2>Campaigns</h2>{body}", body=body)


def _document(title: str, body: Html, csrf: str = "") -> Html:
    return fmt(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="csrf-token" content="{csrf}"><title>{title}</title>'
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/operator.css">'
        '<script src="/ui/static/operator.js" defer></script></head><body>{body}</body></html>',
        csrf=csrf,
        title=title,
        body=body,
    )


def login_page(error: str | None = None) -> Html:
    message = fmt('<p class="error" role="alert">{e}</p>', e=error) if error else Html("")
    return _document(
        "Voxtra operator: sign in",
        fmt(
            '<main class="login"><h1>Voxtra operator</h1>{message}'
            '<form method="post" action="/ui/login" autocomplete="off">'
            '<label for="token">API token (calls:read)</label>'
            '<input id="token" name="token" type="password" autocomplete="off" required autofocus>'
            '<button type="submit">Sign in</button></form>'
            "<p>The token is checked once and exchanged for a session cookie; "
            "it is never put in a URL.</p></main>",
            message=message,
        ),
    )


def operator_page(
    *,
    user: str,
    csrf: str,
    live: Html,
    recent: Sequence[Html],
    campaigns: Html,
) -> Html:
    rows = (
        join(recent)
        if recent
        else Html('<tr class="empty"><td colspan="8">No ended call yet.</td></tr>')
    )
    return _document(
        "Voxtra operator",
        fmt(
            '<header class="top"><h1>Voxtra operator</h1>'
            '<span id="conn" class="conn">connecting…</span>'
            '<span class="user">signed in as <b>{user}</b></span>'
            '<form method="post" action="/ui/logout"><input type="hidden" name="csrf" '
            'value="{csrf}"><button type="submit">Sign out</button></form></header>'
            '<p id="error" class="error" role="alert" hidden></p><main>'
            '<section id="live">{live}</section>'
            '<section id="recent-calls"><h2>Recent calls</h2><table><thead><tr>'
            "<th>ended</th><th>direction</th><th>backend</th><th>parties</th><th>status</th>"
            "<th>duration</th><th>latency p50</th><th>recording</th></tr></thead>"
            '<tbody id="recent-rows">{rows}</tbody></table></section>'
            '<section id="campaigns">{campaigns}</section></main>',
            user=user,
            csrf=csrf,
            live=live,
            rows=rows,
            campaigns=campaigns,
        ),
        csrf,
    )
