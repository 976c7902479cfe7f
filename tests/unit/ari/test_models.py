"""ARI resource models against real REST bodies captured from Asterisk 22."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from voxtra.ari.models import (
    Application,
    AriErrorBody,
    AsteriskInfo,
    AsteriskPing,
    Bridge,
    Channel,
    DeviceState,
    Endpoint,
    LiveRecording,
    PlaybackResource,
    Sound,
    StoredRecording,
    TextMessage,
    Variable,
)

REST = Path(__file__).resolve().parents[2] / "fixtures" / "ari" / "rest"


def rest(name: str) -> Any:
    return json.loads((REST / f"{name}.json").read_text())


def test_channel() -> None:
    chan = Channel.model_validate(rest("channel"))
    assert chan.id and chan.name.startswith("Local/app-42@voxtra-test-")
    assert chan.state == "Up"
    assert isinstance(chan.creationtime, datetime)
    assert chan.language == "en"
    assert chan.dialplan.context == "voxtra-test"
    originated = Channel.model_validate(rest("channel_originate"))
    assert originated.id == chan.id
    channels = TypeAdapter(list[Channel]).validate_python(rest("channels"))
    assert chan.id in {c.id for c in channels}


def test_channel_vars_and_aliases() -> None:
    chan = Channel.model_validate(
        {"id": "c1", "channelvars": {"UNICASTRTP_LOCAL_PORT": 4000}, "caller_rdnis": "123"}
    )
    assert chan.channelvars == {"UNICASTRTP_LOCAL_PORT": "4000"}
    assert chan.caller_rdnis == "123"
    assert chan.tenantid is None
    assert chan.creationtime is None


def test_bridge() -> None:
    bridge = Bridge.model_validate(rest("bridge_get"))
    assert bridge.bridge_type == "mixing"
    assert bridge.bridge_class == "stasis"
    assert bridge.technology == "simple_bridge"
    assert bridge.name == "fx-bridge"
    assert len(bridge.channels) >= 1
    assert isinstance(bridge.creationtime, datetime)
    assert bridge.video_mode == "talker"
    listed = TypeAdapter(list[Bridge]).validate_python(rest("bridges"))
    assert bridge.id in {b.id for b in listed}


def test_playback_and_recordings() -> None:
    playback = PlaybackResource.model_validate(rest("playback"))
    assert playback.media_uri == "sound:hello-world"
    assert playback.target_uri.startswith("channel:")
    assert playback.state in {"queued", "playing"}
    live = LiveRecording.model_validate(rest("live_recording"))
    assert live.name == "fx" and live.format == "wav"
    assert live.target_uri.startswith("channel:")
    got = LiveRecording.model_validate(rest("live_recording_get"))
    assert got.state == "recording"
    stored = StoredRecording.model_validate(rest("stored_recording"))
    assert stored.name == "fx" and stored.format == "wav"
    listed = TypeAdapter(list[StoredRecording]).validate_python(rest("stored_recordings"))
    assert "fx" in {s.name for s in listed}


def test_asterisk_info_and_ping() -> None:
    info = AsteriskInfo.model_validate(rest("asterisk_info"))
    assert info.system is not None and info.system.version.startswith("22.")
    assert info.system.entity_id == "02:fc:00:00:00:01"
    assert info.build is not None and info.build.os == "Linux"
    assert info.config is not None and info.config.default_language == "en"
    assert info.config.setid is not None
    assert info.status is not None and isinstance(info.status.startup_time, datetime)
    assert AsteriskInfo.model_validate({}).system is None
    ping = AsteriskPing.model_validate(rest("asterisk_ping"))
    assert ping.ping == "pong"
    assert isinstance(ping.timestamp, datetime)


def test_small_resources() -> None:
    assert Variable.model_validate(rest("variable")).value == "1"
    assert Variable.model_validate(rest("variable_global")).value
    endpoints = TypeAdapter(list[Endpoint]).validate_python(rest("endpoints"))
    assert any(e.technology == "PJSIP" and e.resource == "sipcaller" for e in endpoints)
    app = Application.model_validate(rest("application"))
    assert app.name == "fixtures"
    assert isinstance(app.device_names, list) and app.events_allowed == []
    sound = Sound.model_validate(rest("sound"))
    assert sound.id == "hello-world"
    assert {f.language for f in sound.formats} >= {"en"}
    assert sound.text is None
    state = DeviceState.model_validate(rest("device_state"))
    assert state.name == "Stasis:fx" and state.state == "BUSY"


def test_error_bodies() -> None:
    assert AriErrorBody.model_validate(rest("error_404")).text == "Channel not found"
    assert "format" in AriErrorBody.model_validate(rest("error_422")).text
    assert AriErrorBody.model_validate(rest("error_500")).text == "Internal Server Error"
    assert (
        AriErrorBody.model_validate(rest("error_500_stored_recordings")).text == "Allocation failed"
    )
    assert AriErrorBody.model_validate({}).text == ""


def test_text_message_from_alias() -> None:
    msg = TextMessage.model_validate({"from": "a", "to": "b", "body": "hi"})
    assert msg.from_ == "a"
    assert TextMessage(from_="x").model_dump(by_alias=True)["from"] == "x"


def test_unknown_fields_kept() -> None:
    data = rest("channel") | {"new_in_asterisk_30": {"x": 1}}
    chan = Channel.model_validate(data)
    assert chan.model_extra == {"new_in_asterisk_30": {"x": 1}}
    assert chan.model_dump()["new_in_asterisk_30"] == {"x": 1}


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Channel, {}),
        (Channel, {"id": "c", "caller": "not an object"}),
        (Bridge, {"id": "b", "channels": "c1"}),
        (PlaybackResource, {"media_uri": "sound:x"}),
        (Endpoint, {"technology": "PJSIP"}),
    ],
)
def test_unusable_shapes_rejected(model: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)
