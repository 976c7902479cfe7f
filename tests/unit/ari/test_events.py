"""ARI events: real captured fixtures parse into the right typed classes; bad input is a
typed error, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxtra.ari import events as ev
from voxtra.ari.events import EVENT_TYPES, EventParseError, UnknownEvent, parse_event
from voxtra.ari.models import Bridge, Channel, LiveRecording, PlaybackResource
from voxtra.errors import VoxtraError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ari"
EVENT_FILES = sorted((FIXTURES / "events").glob("*.json"))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "events" / f"{name}.json").read_text())
    return data


def test_every_fixture_parses_into_its_class() -> None:
    assert len(EVENT_FILES) >= 40
    for path in EVENT_FILES:
        raw = path.read_bytes()
        event = parse_event(raw)
        kind = json.loads(raw)["type"]
        assert type(event) is EVENT_TYPES[kind], path.name
        assert event.type == kind
        assert event.raw == json.loads(raw)


def test_real_fixtures_cover_the_core_kinds() -> None:
    captured = {p.stem for p in EVENT_FILES if not p.stem.endswith("_documented")}
    assert {
        "StasisStart",
        "StasisEnd",
        "ChannelDestroyed",
        "ChannelHangupRequest",
        "ChannelDtmfReceived",
        "ChannelEnteredBridge",
        "ChannelLeftBridge",
        "PlaybackStarted",
        "PlaybackFinished",
        "RecordingStarted",
        "RecordingFinished",
        "Dial",
    } <= captured


def test_every_known_kind_has_a_fixture() -> None:
    covered = {p.stem.removesuffix("_documented") for p in EVENT_FILES}
    assert set(EVENT_TYPES) == covered


def test_stasis_start_fields() -> None:
    event = parse_event(json.dumps(load("StasisStart")))
    assert isinstance(event, ev.StasisStart)
    assert event.args == ["42"]
    assert event.application == "fixtures"
    assert event.asterisk_id == "02:fc:00:00:00:01"
    assert event.timestamp is not None and event.timestamp.tzinfo is not None
    assert event.timestamp.utcoffset() == UTC.utcoffset(None)
    chan = event.channel
    assert isinstance(chan, Channel)
    assert chan.name.startswith("Local/app-42@voxtra-test-") and chan.name.endswith(";2")
    assert chan.state == "Ring"
    assert chan.dialplan.app_name == "Stasis"
    assert chan.dialplan.app_data == "fixtures,42"
    assert chan.dialplan.priority == 1
    assert chan.caller.number == ""
    assert isinstance(chan.creationtime, datetime)
    assert event.channel_id == chan.id
    assert event.bridge_id is None
    assert event.replace_channel is None


def test_channel_destroyed_and_hangup_request() -> None:
    destroyed = parse_event(load("ChannelDestroyed"))
    assert isinstance(destroyed, ev.ChannelDestroyed)
    assert destroyed.cause == 16
    assert destroyed.cause_txt == "Normal Clearing"
    hangup = parse_event(load("ChannelHangupRequest"))
    assert isinstance(hangup, ev.ChannelHangupRequest)
    assert isinstance(hangup.cause, int)
    assert hangup.channel_id == hangup.channel.id


def test_dtmf() -> None:
    event = parse_event(load("ChannelDtmfReceived"))
    assert isinstance(event, ev.ChannelDtmfReceived)
    assert event.digit == "1"
    assert event.duration_ms > 0
    assert event.channel.name.endswith(";2")


def test_bridge_events_carry_both_ids() -> None:
    entered = parse_event(load("ChannelEnteredBridge"))
    assert isinstance(entered, ev.ChannelEnteredBridge)
    assert isinstance(entered.bridge, Bridge)
    assert entered.bridge.bridge_type == "mixing"
    assert entered.bridge.name == "fx-bridge"
    assert entered.bridge_id == entered.bridge.id
    assert entered.channel is not None and entered.channel_id == entered.channel.id
    assert entered.channel.id in entered.bridge.channels
    left = parse_event(load("ChannelLeftBridge"))
    assert isinstance(left, ev.ChannelLeftBridge)
    assert left.bridge_id == entered.bridge_id
    destroyed = parse_event(load("BridgeDestroyed"))
    assert destroyed.bridge_id is not None and destroyed.channel_id is None


def test_playback_and_recording() -> None:
    started = parse_event(load("PlaybackStarted"))
    assert isinstance(started, ev.PlaybackStarted)
    assert isinstance(started.playback, PlaybackResource)
    assert started.playback.media_uri == "sound:hello-world"
    assert started.playback.state == "playing"
    assert started.playback.target_uri.startswith("channel:")
    finished = parse_event(load("PlaybackFinished"))
    assert isinstance(finished, ev.PlaybackFinished)
    assert finished.playback.state == "done"
    cont = parse_event(load("PlaybackContinuing"))
    assert isinstance(cont, ev.PlaybackContinuing)
    assert cont.playback.next_media_uri is not None or cont.playback.media_uri
    rec = parse_event(load("RecordingFinished"))
    assert isinstance(rec, ev.RecordingFinished)
    assert isinstance(rec.recording, LiveRecording)
    assert rec.recording.state == "done"
    assert rec.recording.format == "wav"
    failed = parse_event(load("RecordingFailed_documented"))
    assert isinstance(failed, ev.RecordingFailed)
    assert failed.recording.cause == "Cannot record channel while in bridge"


def test_dial_channel_id_is_the_peer() -> None:
    event = parse_event(load("Dial"))
    assert isinstance(event, ev.Dial)
    assert event.channel_id == event.peer.id
    assert event.dialstring is not None


def test_varset_userevent_talking_dialplan() -> None:
    varset = parse_event(load("ChannelVarset"))
    assert isinstance(varset, ev.ChannelVarset)
    assert varset.variable
    user = parse_event(load("ChannelUserevent"))
    assert isinstance(user, ev.ChannelUserevent)
    assert user.eventname == "fx-event"
    assert user.userevent["key"] == "value"
    talk = parse_event(load("ChannelTalkingFinished"))
    assert isinstance(talk, ev.ChannelTalkingFinished)
    assert talk.duration > 0
    dialplan = parse_event(load("ChannelDialplan"))
    assert isinstance(dialplan, ev.ChannelDialplan)
    assert dialplan.dialplan_app
    device = parse_event(load("DeviceStateChanged"))
    assert isinstance(device, ev.DeviceStateChanged)
    assert device.device_state.name == "Stasis:fx"
    assert device.device_state.state == "BUSY"


def test_documented_shapes() -> None:
    text = parse_event(load("TextMessageReceived_documented"))
    assert isinstance(text, ev.TextMessageReceived)
    assert text.message.from_ == "sip:alice@127.0.0.1"
    assert text.message.body == "hello"
    transfer = parse_event(load("ChannelTransfer_documented"))
    assert isinstance(transfer, ev.ChannelTransfer)
    assert transfer.channel_id == transfer.referred_by.source_channel.id
    assert transfer.refer_to.requested_destination.destination == "sip:200@127.0.0.1"
    attended = parse_event(load("BridgeAttendedTransfer_documented"))
    assert isinstance(attended, ev.BridgeAttendedTransfer)
    assert attended.channel_id == attended.transferer_first_leg.id
    assert attended.bridge_id is not None
    missing = parse_event(load("MissingParams_documented"))
    assert isinstance(missing, ev.MissingParams)
    assert missing.params == ["app"]
    assert missing.application == ""


def test_unknown_kind_is_kept_with_its_ids() -> None:
    data = load("StasisStart") | {"type": "SomethingNew", "extra_field": {"a": 1}}
    data["bridge"] = {"id": "b1"}
    event = parse_event(json.dumps(data).encode())
    assert type(event) is UnknownEvent
    assert event.type == "SomethingNew"
    assert event.raw == data
    assert event.model_extra is not None and event.model_extra["extra_field"] == {"a": 1}
    assert event.channel_id == data["channel"]["id"]
    assert event.bridge_id == "b1"
    bare = parse_event({"type": "Other"})
    assert isinstance(bare, UnknownEvent)
    assert bare.channel_id is None and bare.bridge_id is None


def test_extra_fields_are_tolerated_and_kept() -> None:
    data = load("ChannelDtmfReceived")
    data["future_field"] = [1, 2]
    data["channel"]["future_channel_field"] = "x"
    event = parse_event(data)
    assert isinstance(event, ev.ChannelDtmfReceived)
    assert event.model_extra == {"future_field": [1, 2]}
    assert event.channel.model_extra == {"future_channel_field": "x"}


def test_raw_is_excluded_from_serialisation() -> None:
    event = parse_event(load("StasisEnd"))
    dumped = event.model_dump()
    assert "raw" not in dumped and "_raw" not in dumped
    # A hand-built event still has a raw view.
    built = ev.StasisEnd(application="a", channel=Channel(id="c1"))
    assert built.raw["channel"]["id"] == "c1"
    assert built.raw["type"] == "StasisEnd"


def test_unreadable_timestamp_becomes_none() -> None:
    event = parse_event(load("StasisEnd") | {"timestamp": "yesterday"})
    assert event.timestamp is None
    assert event.raw["timestamp"] == "yesterday"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("null", "expected a JSON object"),
        ('{"application": "x"}', "no string 'type'"),
        ('{"type": 5}', "no string 'type'"),
        ('{"type": ""}', "no string 'type'"),
        ('{"type": "StasisStart", "application": "x"}', "bad StasisStart"),
        ('{"type": "StasisStart", "channel": [1]}', "bad StasisStart"),
        ('{"type": "ChannelDtmfReceived", "channel": {"id": "c"}, "digit": {}}', "bad"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_input_is_a_typed_error(data: bytes | str, fragment: str) -> None:
    with pytest.raises(EventParseError, match=fragment) as info:
        parse_event(data)
    assert isinstance(info.value, VoxtraError)
    assert len(info.value.raw) <= 500


def test_parse_error_names_the_kind() -> None:
    with pytest.raises(EventParseError) as info:
        parse_event({"type": "PlaybackStarted", "playback": "nope"})
    assert info.value.event_type == "PlaybackStarted"


def test_sequence_replays_cleanly() -> None:
    lines = (FIXTURES / "sequence.jsonl").read_text().splitlines()
    assert len(lines) > 30
    events = [parse_event(line) for line in lines]
    assert not any(isinstance(e, UnknownEvent) for e in events)
    kinds = [e.type for e in events]
    assert "StasisStart" in kinds and "StasisEnd" in kinds


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def event_like(draw: st.DrawFn) -> dict[str, Any]:
    """Dicts that look like events: a real or random type, real field names, junk values."""
    kind = draw(st.sampled_from([*EVENT_TYPES, "Nope"]) | st.text(max_size=8))
    names = st.sampled_from(
        [
            "channel",
            "bridge",
            "playback",
            "recording",
            "args",
            "digit",
            "cause",
            "peer",
            "timestamp",
            "application",
            "endpoint",
            "device_state",
            "message",
            "refer_to",
        ]
    )
    body = draw(st.dictionaries(names, json_values, max_size=6))
    return {"type": kind, **body}


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, event_like(), st.binary(max_size=64), st.text(max_size=64)))
def test_fuzz_only_event_parse_error(data: Any) -> None:
    if isinstance(data, (dict, bytes, str)):
        candidates: list[Any] = [data]
    else:
        candidates = [json.dumps(data)]
    if isinstance(data, dict):
        candidates.append(json.dumps(data))
    for item in candidates:
        try:
            event = parse_event(item)
        except EventParseError:
            continue
        assert isinstance(event, ev.AriEvent)
        assert isinstance(event.type, str) and event.type
        assert event.channel_id is None or isinstance(event.channel_id, str)
        assert event.bridge_id is None or isinstance(event.bridge_id, str)
