"""The event parser's fast path (pydantic-core reads the JSON text, ``raw`` decoded on
demand) gives exactly what the full parser (``json.loads`` then ``parse_object``) gives:
on every captured fixture, every line of the recorded sequence, and the inputs where the
two JSON readers could part."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from voxtra.ari import events as ev
from voxtra.ari.events import AriEvent, EventParseError, parse_event, parse_object

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ari"
TEXTS = [
    *(p.read_text() for p in sorted((FIXTURES / "events").glob("*.json"))),
    *(FIXTURES / "sequence.jsonl").read_text().splitlines(),
]


def full(text: str | bytes) -> AriEvent:
    return parse_object(json.loads(text), text)


def same(fast: AriEvent, slow: AriEvent) -> None:
    assert type(fast) is type(slow)
    assert fast.model_dump() == slow.model_dump()
    # which fields the message set (defaults left out), nested models included
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    assert fast.model_extra == slow.model_extra
    assert (fast.channel_id, fast.bridge_id, fast.target_uris) == (
        slow.channel_id,
        slow.bridge_id,
        slow.target_uris,
    )
    assert fast.raw == slow.raw
    assert fast == slow


def test_fixture_count() -> None:
    assert len(TEXTS) > 80


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_fast_path_equals_the_full_parser(text: str) -> None:
    same(parse_event(text), full(text))
    same(parse_event(text.encode()), full(text))
    same(parse_event(bytearray(text.encode())), full(text))
    same(parse_event(json.loads(text)), full(text))


def test_known_kinds_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """No json.loads for a known kind until someone reads ``raw``."""
    calls: list[Any] = []

    def loads(data: Any) -> Any:
        calls.append(data)
        return json.loads(data)

    monkeypatch.setattr(ev, "json", SimpleNamespace(loads=loads))
    for text in TEXTS:
        event = parse_event(text)
        assert event.channel_id is None or isinstance(event.channel_id, str)
    assert calls == []
    event = parse_event(TEXTS[0])
    assert event.raw == json.loads(TEXTS[0])
    assert event.raw is event.raw  # decoded once
    assert len(calls) == 1


def _outcome(data: str | bytes) -> tuple[str, Any]:
    try:
        event = parse_event(data)
    except EventParseError as exc:
        return ("error", (str(exc), exc.event_type, exc.raw))
    return ("event", (type(event), event.model_dump(), event.raw))


def _full_outcome(data: str | bytes) -> tuple[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return ("error", (f"not valid JSON: {exc}", None, EventParseError("", raw=data).raw))
    try:
        event = parse_object(obj, data)
    except EventParseError as exc:
        return ("error", (str(exc), exc.event_type, exc.raw))
    return ("event", (type(event), event.model_dump(), event.raw))


END = json.loads(next(t for t in TEXTS if '"StasisEnd"' in t))
CHANNEL = json.dumps(END["channel"])
EDGES: list[str | bytes] = [
    # duplicate keys: json.loads keeps the last one
    '{"type": "StasisEnd", "channel": {"id": "a"}, "channel": ' + CHANNEL + "}",
    '{"type": "ChannelVarset", "variable": "X", "value": "1", "value": "2"}',
    # escapes json.loads reads its own way
    '{"type": "ChannelVarset", "variable": "X", "value": "\\ud800"}',
    '{"type": "ChannelVarset", "variable": "X", "value": "\\u00e9\\n"}',
    '{"type": "ChannelVarset", "variable": "X", "value": "a\x01b"}',
    '{"type": "ChannelDestroyed", "cause": NaN, "channel": ' + CHANNEL + "}",
    '{"type": "ChannelDestroyed", "cause": 16.0, "channel": ' + CHANNEL + "}",
    '{"type": "ChannelDestroyed", "cause": 1e400, "channel": ' + CHANNEL + "}",
    '{"type": "ChannelDestroyed", "cause": "16", "channel": ' + CHANNEL + "}",
    '\ufeff{"type": "ApplicationReplaced"}',
    b'\xef\xbb\xbf{"type": "ApplicationReplaced"}',
    '{"type": "ApplicationReplaced"}'.encode("utf-16"),
    '{"type": "ApplicationReplaced"}'.encode("utf-32-le"),
    b'{"type": "ApplicationReplaced", "x": "\xff"}',
    '  {"type": "ApplicationReplaced"}  \n',
    '{"type": "ApplicationReplaced"} x',
    # unknown kinds, bad shapes, not events at all
    '{"type": "SomethingNew", "channel": {"id": "c1"}, "bridge": {"id": "b1"}}',
    '{"type": "StasisStart", "application": "x"}',
    '{"type": "StasisStart", "channel": [1]}',
    '{"type": "PlaybackStarted", "playback": "nope"}',
    '{"type": 5}',
    "[1, 2]",
    "null",
    "{not json",
    "[" * 100_000,
    # extras named like routing fields are not a channel or bridge
    '{"type": "ApplicationReplaced", "channel": {"id": "c1"}, "bridge": {"id": "b"}}',
    '{"type": "ChannelVarset", "variable": "X", "playback": {"target_uri": "channel:x"}}',
]


@pytest.mark.parametrize("data", EDGES, ids=range(len(EDGES)))
def test_edge_inputs_end_as_the_full_parser_ends(data: str | bytes) -> None:
    assert _outcome(data) == _full_outcome(data)


def test_routing_ids_of_extras_and_targets() -> None:
    replaced = parse_event(EDGES[-2])
    assert (replaced.channel_id, replaced.bridge_id) == (None, None)
    assert parse_event(EDGES[-1]).target_uris == ()
    playback = parse_event(next(t for t in TEXTS if '"PlaybackStarted"' in t))
    assert playback.target_uris == (playback.raw["playback"]["target_uri"],)
