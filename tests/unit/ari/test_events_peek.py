"""peek_route: an event's kind and channel id read from its text, when that is sure.

The app drops unparsed the events about a channel nobody owns; that is only right if
what peek_route reads is what the full parse routes by. Checked on every captured
fixture and every line of the recorded sequence, laid out as Asterisk sends them
(compact, each object's ``id`` first), and on layouts where it must not guess.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voxtra.ari.events import CHANNEL_ROUTED, EVENT_TYPES, AriEvent, parse_event, peek_route

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ari"


def _id_first(value: Any) -> Any:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k != "id")
        return {k: _id_first(value[k]) for k in keys}
    if isinstance(value, list):
        return [_id_first(v) for v in value]
    return value


def _as_asterisk(obj: dict[str, Any]) -> str:
    obj = {"type": obj["type"], **{k: v for k, v in obj.items() if k != "type"}}
    return json.dumps(_id_first(obj), separators=(",", ":"))


def _messages() -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted((FIXTURES / "events").glob("*.json"))]
    for line in (FIXTURES / "sequence.jsonl").read_text().splitlines():
        if line.strip():
            found.append(json.loads(line))
    return found


MESSAGES = _messages()


@pytest.mark.parametrize("obj", MESSAGES, ids=[f"{i}-{m['type']}" for i, m in enumerate(MESSAGES)])
def test_what_is_peeked_is_what_the_parse_routes_by(obj: dict[str, Any]) -> None:
    text = _as_asterisk(obj)
    event: AriEvent = parse_event(text)
    peeked = peek_route(text)
    if peeked is None:
        # Only a kind routed by more than a channel, or one without a channel.
        assert obj["type"] not in CHANNEL_ROUTED or event.channel_id is None
        return
    kind, channel_id = peeked
    assert kind == event.type and kind in CHANNEL_ROUTED
    assert channel_id == event.channel_id
    assert event.bridge_id is None and event.target_uris == ()


def test_every_channel_routed_kind_is_peeked_and_known() -> None:
    peeked = {m["type"] for m in MESSAGES if peek_route(_as_asterisk(m)) is not None}
    assert set(CHANNEL_ROUTED) <= set(EVENT_TYPES)
    # every kind of the table that the captures hold with a channel
    held = {m["type"] for m in MESSAGES if m["type"] in CHANNEL_ROUTED}
    assert held - {"ChannelVarset"} <= peeked
    for kind in CHANNEL_ROUTED:
        fields = EVENT_TYPES[kind].model_fields
        assert "bridge" not in fields and "playback" not in fields and "recording" not in fields


def _state_change(**channel: Any) -> dict[str, Any]:
    return {"type": "ChannelStateChange", "channel": {"id": "c1", "state": "Up", **channel}}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_state_change()),  # spaced (ari.conf pretty, or another server)
        json.dumps(_state_change(), indent=2),
        json.dumps(_state_change(), separators=(",", ":")).encode(),  # bytes
        # the id not first in its object
        '{"type":"ChannelStateChange","channel":{"state":"Up","id":"c1"}}',
        # an escape in the id
        '{"type":"ChannelStateChange","channel":{"id":"c\\u0031"}}',
        # two channel keys, two type keys
        '{"type":"ChannelStateChange","channel":{"id":"c1"},"x":{"channel":{"id":"c2"}}}',
        '{"type":"ChannelStateChange","channel":{"id":"c1"},"x":{"type":"y"}}',
        # kinds routed by more than a channel, an unknown kind, a global ChannelVarset
        '{"type":"ChannelEnteredBridge","channel":{"id":"c1"},"bridge":{"id":"b1"}}',
        '{"type":"PlaybackStarted","channel":{"id":"c1"}}',
        '{"type":"ChannelFuture","channel":{"id":"c1"}}',
        '{"type":"ChannelVarset","variable":"G","value":"1"}',
        '{"type":"StasisStart","channel":{"id":"c1"}}',
        '{"type":"ChannelState',  # cut short
        '{"type":"ChannelStateChange","channel":{"id":"c1',
    ],
)
def test_layouts_it_cannot_be_sure_of_are_left_to_the_parse(text: str | bytes) -> None:
    assert peek_route(text) is None


def test_a_string_holding_the_patterns_is_not_taken_for_keys() -> None:
    inner = json.dumps({"type": "ChannelStateChange", "channel": {"id": "c9"}})
    text = json.dumps(
        {"type": "ChannelVarset", "variable": "X", "value": inner, "channel": {"id": "c1"}},
        separators=(",", ":"),
    )
    assert peek_route(text) == ("ChannelVarset", "c1")
    assert parse_event(text).channel_id == "c1"
