"""FakeAsterisk's REST answers and events, through the real AriClient and AriEventStream.

What Asterisk 22 itself answers is checked by tests/integration/test_fake_contract.py;
these pin the fake's own behaviour (state, scripting, media) without Asterisk.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from voxtra.ari.client import AriClient
from voxtra.ari.errors import (
    AriBadRequest,
    AriConflict,
    AriConnectionError,
    AriError,
    AriNotFound,
    AriServerError,
    AriUnprocessable,
)
from voxtra.ari.events import AriEvent
from voxtra.ari.stream import AriEventStream
from voxtra.media.rtp import PT_PCMU, RtpPacket, RtpSender
from voxtra.testing import FakeAsterisk, FakeAsteriskError, FakeCall

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ari"
APP = "unit-app"


class Events:
    """Collects the events the stream delivers; tests wait for the ones they expect."""

    def __init__(self) -> None:
        self.seen: list[AriEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: AriEvent) -> None:
        self.seen.append(event)
        self._changed.set()

    def types(self, channel_id: str | None = None) -> list[str]:
        return [e.type for e in self.seen if channel_id is None or _channel_id(e) == channel_id]

    async def wait(self, predicate: Callable[[AriEvent], bool], timeout: float = 5.0) -> AriEvent:
        async def scan() -> AriEvent:
            while True:
                for event in self.seen:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def wait_type(self, kind: str, count: int = 1) -> None:
        async def enough() -> None:
            while sum(e.type == kind for e in self.seen) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), 5.0)


def _channel_id(event: AriEvent) -> str | None:
    raw = event.raw.get("channel") or event.raw.get("peer")
    return raw.get("id") if isinstance(raw, dict) else None


@pytest.fixture
async def env() -> AsyncIterator[tuple[FakeAsterisk, AriClient, Events]]:
    fake = FakeAsterisk()
    ari = AriClient("http://fake", "user", "secret", transport=fake)
    events = Events()
    stream = AriEventStream(ari, APP, on_event=events, initial_backoff=0.01, max_backoff=0.05)
    task = asyncio.create_task(stream.run())
    await stream.wait_connected(5)
    yield fake, ari, events
    await stream.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ari.close()
    await fake.aclose()


Env = tuple[FakeAsterisk, AriClient, Events]


async def _answered_call(env: Env) -> FakeCall:
    fake, ari, _ = env
    call = await fake.incoming(extension="1000", caller="+4930123")
    await ari.channels.answer(call.id)
    return call


# -- shapes against what Asterisk 22 sent -----------------------------------------------


def _fixture_keys(kind: str, name: str) -> set[str]:
    return set(json.loads((FIXTURES / kind / f"{name}.json").read_text()))


async def test_incoming_call_enters_the_app_ringing_with_asterisks_shape(env: Env) -> None:
    fake, ari, events = env
    call = await fake.incoming(extension="1000", caller="+4930123", context="from-sip")
    start = await events.wait(lambda e: e.type == "StasisStart")
    raw = start.raw
    assert set(raw) == _fixture_keys("events", "StasisStart")
    assert set(raw["channel"]) == set(json.loads((FIXTURES / "rest" / "channel.json").read_text()))
    assert raw["args"] == ["1000"]
    assert raw["channel"]["state"] == "Ring"
    assert raw["channel"]["caller"]["number"] == "+4930123"
    assert raw["channel"]["dialplan"]["app_name"] == "Stasis"
    assert raw["channel"]["dialplan"]["app_data"] == f"{APP},1000"
    got = await ari.channels.get(call.id)
    assert got.dialplan.context == "from-sip"
    assert not call.answered


async def test_rest_bodies_have_the_keys_asterisk_sends(env: Env) -> None:
    _fake, ari, _ = env
    call = await _answered_call(env)
    bridge = await ari.request("POST", "/bridges", params={"name": "b"})
    assert set(bridge) == _fixture_keys("rest", "bridge")
    playback = await ari.request("POST", f"/channels/{call.id}/play", params={"media": "sound:x"})
    assert set(playback) == _fixture_keys("rest", "playback")
    recording = await ari.request(
        "POST", f"/channels/{call.id}/record", params={"name": "r", "format": "wav"}
    )
    assert set(recording) == _fixture_keys("rest", "live_recording")
    application = await ari.request("GET", f"/applications/{APP}")
    assert set(application) == _fixture_keys("rest", "application")
    info = await ari.request("GET", "/asterisk/info")
    assert set(info) == _fixture_keys("rest", "asterisk_info")
    assert call.id in application["channel_ids"]


# -- the call's life ---------------------------------------------------------------------


async def test_answer_play_press_and_app_hangup_in_asterisks_order(env: Env) -> None:
    fake, ari, events = env
    call = await fake.incoming(extension="1000", caller="+4930123")
    await ari.channels.answer(call.id)
    await ari.channels.answer(call.id)  # already up: no second state change
    await call.wait_answered()
    await ari.channels.play(call.id, "sound:hello-world")
    await events.wait_type("PlaybackFinished")
    await call.press("12#")
    await ari.channels.hangup(call.id)
    await call.wait_ended()
    await events.wait_type("ChannelDestroyed")
    assert events.types(call.id) == [
        "StasisStart",
        "ChannelStateChange",
        "ChannelDtmfReceived",
        "ChannelDtmfReceived",
        "ChannelDtmfReceived",
        "ChannelHangupRequest",
        "StasisEnd",
        "ChannelDestroyed",
    ]
    assert [e.raw["digit"] for e in events.seen if e.type == "ChannelDtmfReceived"] == list("12#")
    assert events.types().count("PlaybackStarted") == 1
    request = next(e for e in events.seen if e.type == "ChannelHangupRequest")
    assert (request.raw["cause"], request.raw["soft"]) == (32, True)
    assert call.played == ["sound:hello-world"]
    assert call.hangup_cause == 16
    assert call.answered and call.ended
    with pytest.raises(AriNotFound):
        await ari.channels.get(call.id)


async def test_caller_hangs_up_mid_playback(env: Env) -> None:
    fake, ari, events = env
    fake.playback_duration = 60.0
    call = await _answered_call(env)
    playback = await ari.channels.play(call.id, "sound:long")
    await events.wait_type("PlaybackStarted")
    assert (await ari.playbacks.get(playback.id)).state == "playing"
    await call.hang_up(cause=16)
    await call.wait_ended()
    await events.wait_type("ChannelDestroyed")
    assert events.types()[-4:] == [
        "ChannelHangupRequest",
        "PlaybackFinished",
        "StasisEnd",
        "ChannelDestroyed",
    ]
    destroyed = events.seen[-1]
    assert (destroyed.raw["cause"], destroyed.raw["cause_txt"]) == (16, "Normal Clearing")
    with pytest.raises(AriNotFound):
        await ari.playbacks.get(playback.id)


async def test_a_playback_of_several_media_continues_then_finishes(env: Env) -> None:
    _fake, ari, events = env
    call = await _answered_call(env)
    await ari.channels.play(call.id, ["sound:a", "sound:b", "digits:42"])
    await events.wait_type("PlaybackFinished")
    kinds = [e.type for e in events.seen if e.type.startswith("Playback")]
    assert kinds == [
        "PlaybackStarted",
        "PlaybackContinuing",
        "PlaybackContinuing",
        "PlaybackFinished",
    ]
    assert call.played == ["sound:a", "sound:b", "digits:42"]


async def test_stopping_a_playback_finishes_it(env: Env) -> None:
    fake, ari, events = env
    fake.playback_duration = 60.0
    call = await _answered_call(env)
    playback = await ari.channels.play(call.id, "sound:long")
    await events.wait_type("PlaybackStarted")
    await ari.playbacks.control(playback.id, "pause")
    assert (await ari.playbacks.get(playback.id)).state == "paused"
    await ari.playbacks.stop(playback.id)
    finished = await events.wait(lambda e: e.type == "PlaybackFinished")
    assert finished.raw["playback"]["state"] == "done"


async def test_continue_leaves_the_app_and_records_where_the_call_went(env: Env) -> None:
    _fake, ari, events = env
    call = await _answered_call(env)
    await ari.channels.continue_in_dialplan(call.id, context="sales", extension="200")
    await call.wait_left_app()
    await events.wait_type("StasisEnd")
    assert call.transferred_to == "200@sales"
    assert not call.ended
    assert events.types(call.id)[-1] == "StasisEnd"
    assert (await ari.channels.get(call.id)).dialplan.context == "sales"
    with pytest.raises(AriConflict, match="not in Stasis"):
        await ari.channels.answer(call.id)


async def test_hold_moh_mute_dtmf_and_variables_are_kept(env: Env) -> None:
    _fake, ari, events = env
    call = await _answered_call(env)
    await ari.channels.hold(call.id)
    await ari.channels.start_moh(call.id, "jazz")
    await ari.channels.mute(call.id, "in")
    await ari.channels.send_dtmf(call.id, "1#")
    await ari.channels.set_variable(call.id, "LANG", "de")
    assert call.on_hold and call.moh == "jazz" and call.muted == {"in"}
    assert call.dtmf_sent == "1#"
    assert call.variables["LANG"] == "de"
    assert await ari.channels.get_variable(call.id, "LANG") == "de"
    with pytest.raises(AriNotFound, match="variable was not found"):
        await ari.channels.get_variable(call.id, "UNSET")
    with pytest.raises(AriServerError, match="Unable to read provided function"):
        await ari.channels.get_variable(call.id, "CHANNEL(pjsip,call-id)")
    await ari.channels.unhold(call.id)
    await ari.channels.stop_moh(call.id)
    await ari.channels.unmute(call.id, "both")
    assert not call.on_hold and call.moh is None and not call.muted
    await events.wait(lambda e: e.type == "ChannelVarset" and e.raw["variable"] == "LANG")


async def test_channelvars_show_in_the_channel_json() -> None:
    fake = FakeAsterisk(channelvars=["VOXTRA_INSTANCE"])
    ari = AriClient("http://fake", "u", "p", transport=fake)
    connection = await fake.connect_events([APP])
    call = await fake.incoming(variables={"VOXTRA_INSTANCE": "a1"})
    assert (await ari.channels.get(call.id)).channelvars == {"VOXTRA_INSTANCE": "a1"}
    await connection.close()
    await fake.aclose()


# -- bridges, originate ------------------------------------------------------------------


async def test_bridge_with_an_outbound_leg_records_the_transfer(env: Env) -> None:
    fake, ari, events = env
    call = await _answered_call(env)
    await ari.channels.originate("PJSIP/bob", app=APP, channel_id="leg-1", caller_id='"Desk" <100>')
    await events.wait(lambda e: e.type == "StasisStart" and _channel_id(e) == "leg-1")
    assert [e.raw.get("dialstatus") for e in events.seen if e.type == "Dial"] == ["", "ANSWER"]
    bridge = await ari.bridges.create("mixing", name="b")
    await ari.bridges.add_channel(bridge.id, [call.id, "leg-1"])
    assert (await ari.bridges.get(bridge.id)).channels == [call.id, "leg-1"]
    assert call.transferred_to == "PJSIP/bob"
    leg = fake.call("leg-1")
    assert (leg.caller_name, leg.caller) == ("Desk", "100")
    assert fake.originated == [leg]
    await ari.bridges.play(bridge.id, "sound:beep")
    assert call.played[-1] == leg.played[-1] == "sound:beep"
    await ari.bridges.destroy(bridge.id)
    await events.wait_type("BridgeDestroyed")
    assert events.types().count("ChannelEnteredBridge") == 2
    assert events.types().count("ChannelLeftBridge") == 2
    assert call.bridge_id is None


async def test_bridge_errors_are_asterisks(env: Env) -> None:
    _fake, ari, _ = env
    call = await _answered_call(env)
    bridge = await ari.bridges.create()
    with pytest.raises(AriBadRequest, match="Channel not found"):
        await ari.bridges.add_channel(bridge.id, "nope")
    with pytest.raises(AriNotFound, match="Bridge not found"):
        await ari.bridges.add_channel("nope", call.id)
    await ari.channels.continue_in_dialplan(call.id)
    with pytest.raises(AriUnprocessable, match="not in Stasis"):
        await ari.bridges.add_channel(bridge.id, call.id)


@pytest.mark.parametrize(
    ("outcome", "status", "cause"),
    [("busy", "BUSY", 17), ("noanswer", "NOANSWER", 19), ("congestion", "CONGESTION", 34)],
)
async def test_scripted_far_ends_that_do_not_answer(
    env: Env, outcome: str, status: str, cause: int
) -> None:
    fake, ari, events = env
    fake.endpoint_outcomes["PJSIP/bob"] = outcome
    await ari.channels.originate("PJSIP/bob", app=APP, channel_id="out-1")
    destroyed = await events.wait(lambda e: e.type == "ChannelDestroyed")
    assert [e.raw.get("dialstatus") for e in events.seen if e.type == "Dial"] == ["", status]
    assert destroyed.raw["cause"] == cause
    assert "StasisStart" not in events.types("out-1")


async def test_a_ringing_far_end_answers_when_the_test_says_so(env: Env) -> None:
    fake, ari, events = env
    fake.dial_outcome = "ring"
    await ari.channels.originate("PJSIP/bob", app=APP, app_args="x,y", channel_id="out-2")
    await fake.wait_until(lambda: bool(fake.originated) and fake.originated[0].ringing)
    leg = fake.originated[0]
    assert not leg.answered and "StasisStart" not in events.types("out-2")
    await leg.answer()
    start = await events.wait(lambda e: e.type == "StasisStart")
    assert start.raw["args"] == ["x", "y"]
    assert leg.answered


async def test_answer_outbound_false_means_no_answer(env: Env) -> None:
    fake, ari, events = env
    fake.answer_outbound = False
    assert fake.dial_outcome == "noanswer"
    await ari.channels.originate("PJSIP/bob", app=APP)
    destroyed = await events.wait(lambda e: e.type == "ChannelDestroyed")
    assert destroyed.raw["cause"] == 19


async def test_originate_refusals(env: Env) -> None:
    fake, ari, _ = env
    with pytest.raises(AriServerError, match="Allocation failed"):
        await ari.channels.originate("Nope/x", app=APP)
    with pytest.raises(AriBadRequest, match="Application or extension"):
        await ari.request("POST", "/channels", params={"endpoint": "PJSIP/bob"})
    call = await fake.incoming()
    with pytest.raises(AriConflict, match="already exists"):
        await ari.channels.originate("PJSIP/bob", app=APP, channel_id=call.id)


# -- recordings, snoops, media -----------------------------------------------------------


async def test_record_stop_and_fetch_a_valid_wav(env: Env) -> None:
    _fake, ari, events = env
    call = await _answered_call(env)
    await ari.channels.record(call.id, "msg-1")
    await events.wait_type("RecordingStarted")
    assert (await ari.recordings.get_live("msg-1")).state == "recording"
    with pytest.raises(AriConflict, match="already exists"):
        await ari.channels.record(call.id, "msg-1")
    await ari.recordings.stop("msg-1")
    finished = await events.wait(lambda e: e.type == "RecordingFinished")
    assert finished.raw["recording"]["state"] == "done"
    assert call.recordings == ["msg-1"]
    data = await ari.recordings.get_file("msg-1")
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
    assert [r.name for r in await ari.recordings.list_stored()] == ["msg-1"]
    await ari.recordings.delete_stored("msg-1")
    with pytest.raises(AriNotFound):
        await ari.recordings.get_stored("msg-1")


async def test_a_digit_in_terminate_on_or_the_hangup_ends_a_recording(env: Env) -> None:
    fake, ari, events = env
    call = await _answered_call(env)
    await ari.channels.record(call.id, "by-key", terminate_on="#")
    await call.press("1#")
    await events.wait_type("RecordingFinished")
    await ari.channels.record(call.id, "by-hangup")
    await call.hang_up()
    await events.wait_type("RecordingFinished", 2)
    assert set(fake.stored_recordings) == {"by-key", "by-hangup"}


async def test_snoop_enters_the_app_and_goes_with_the_spied_channel(env: Env) -> None:
    fake, ari, events = env
    call = await _answered_call(env)
    with pytest.raises(AriBadRequest, match="spy or whisper"):
        await ari.request("POST", f"/channels/{call.id}/snoop", params={"app": APP})
    snoop = await ari.channels.snoop(call.id, APP, spy="in", app_args="rec")
    start = await events.wait(lambda e: e.type == "StasisStart" and _channel_id(e) == snoop.id)
    assert start.raw["args"] == ["rec"]
    await call.hang_up()
    await fake.wait_until(lambda: snoop.id not in fake.channels)


async def test_external_media_is_rtp_on_localhost(env: Env) -> None:
    fake, ari, events = env
    call = await _answered_call(env)
    app_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    app_side.bind(("127.0.0.1", 0))
    app_side.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        port = app_side.getsockname()[1]
        media = await ari.channels.external_media(
            APP, external_host=f"127.0.0.1:{port}", format="ulaw", channel_id="em-1"
        )
        variables = media.channelvars or {}
        assert variables["UNICASTRTP_LOCAL_ADDRESS"] == "127.0.0.1"
        fake_port = int(variables["UNICASTRTP_LOCAL_PORT"])
        bridge = await ari.bridges.create()
        with pytest.raises(AriUnprocessable):  # not in Stasis until its StasisStart
            await ari.bridges.add_channel(bridge.id, "em-1")
        await events.wait(lambda e: e.type == "StasisStart" and _channel_id(e) == "em-1")
        await ari.bridges.add_channel(bridge.id, [call.id, "em-1"])
        call.send_audio(b"\x01" * 160)
        packets: list[RtpPacket] = []
        while b"\x01" * 160 not in [p.payload for p in packets[:-1]]:
            packets.append(RtpPacket.parse(await loop.sock_recv(app_side, 2048)))
        assert {p.payload_type for p in packets} == {PT_PCMU}
        assert {len(p.payload) for p in packets} == {160}  # 20 ms of 8 kHz mu-law
        # silence until the test's audio, the audio once, then silence again
        payloads = [p.payload for p in packets]
        assert set(payloads) == {b"\xff" * 160, b"\x01" * 160}
        assert payloads.count(b"\x01" * 160) == 1 and payloads[-1] == b"\xff" * 160
        first = packets[0].sequence
        assert [(p.sequence - first) % 65536 for p in packets] == list(range(len(packets)))
        sender = RtpSender(PT_PCMU)
        for _ in range(2):
            app_side.sendto(sender.build(b"\x55" * 160), ("127.0.0.1", fake_port))
        await fake.wait_until(lambda: len(call.audio_heard) == 320)
        assert call.audio_heard == b"\x55" * 320
    finally:
        app_side.close()


@pytest.mark.parametrize(
    ("encapsulation", "transport"), [("none", "websocket"), ("audiosocket", "tcp")]
)
async def test_other_media_transports_are_refused_by_name(
    env: Env, encapsulation: str, transport: str
) -> None:
    _, ari, _ = env
    with pytest.raises(AriServerError, match="FakeAsterisk speaks RTP only") as caught:
        await ari.channels.external_media(
            APP,
            external_host="x:1",
            encapsulation=encapsulation,
            transport=transport,  # type: ignore[arg-type]
        )
    assert caught.value.status == 501


# -- the transport itself ---------------------------------------------------------------


async def test_unknown_paths_and_methods_are_asterisks_404_and_405(env: Env) -> None:
    _, ari, _ = env
    with pytest.raises(AriNotFound, match="Resource not found"):
        await ari.request("GET", "/nosuch")
    with pytest.raises(AriError) as caught:
        await ari.request("PUT", "/channels")
    assert caught.value.status == 405
    for path in ("/channels/x", "/bridges/x", "/playbacks/x", "/recordings/live/x"):
        with pytest.raises(AriNotFound):
            await ari.request("GET", path)


async def test_requests_are_logged(env: Env) -> None:
    fake, _ari, _ = env
    call = await _answered_call(env)
    assert ("POST", f"/channels/{call.id}/answer") in fake.requests


async def test_events_outage_and_reconnect(env: Env) -> None:
    fake, _ari, events = env
    assert fake.connects == 1
    fake.disconnect_events()
    assert fake.apps == set()
    with pytest.raises(FakeAsteriskError, match="no events connection"):
        await fake.incoming(app=APP)
    await fake.wait_connected(APP)
    assert fake.connects == 2
    call = await fake.incoming()
    await events.wait(lambda e: e.type == "StasisStart" and _channel_id(e) == call.id)


async def test_an_unreachable_fake_fails_like_a_dead_asterisk() -> None:
    fake = FakeAsterisk()
    ari = AriClient("http://fake", "u", "p", transport=fake)
    fake.reachable = False
    with pytest.raises(AriConnectionError):
        await ari.asterisk.info()
    with pytest.raises(AriConnectionError):
        await fake.connect_events([APP])
    await fake.aclose()


async def test_a_second_connection_takes_the_app_over() -> None:
    fake = FakeAsterisk()
    first = await fake.connect_events([APP])
    second = await fake.connect_events([APP])
    received = []
    await first.close()
    async for text in first:
        received.append(json.loads(text)["type"])
    assert received == ["ApplicationReplaced"]
    await second.close()
    await fake.aclose()


async def test_incoming_needs_a_connected_app() -> None:
    fake = FakeAsterisk()
    with pytest.raises(FakeAsteriskError, match="registered apps are none"):
        await fake.incoming()
    await fake.aclose()


async def test_a_deserted_app_stays_listed_while_calls_are_in_it() -> None:
    fake = FakeAsterisk()
    ari = AriClient("http://fake", "u", "p", transport=fake)
    connection = await fake.connect_events([APP])
    call = await fake.incoming()
    await connection.close()
    assert (await ari.applications.get(APP)).channel_ids == [call.id]
    await call.hang_up()
    with pytest.raises(AriNotFound, match="Application not found"):
        await ari.applications.get(APP)
    await fake.aclose()


async def test_redirect_records_the_target_and_ends_the_call(env: Env) -> None:
    _fake, ari, _events = env
    call = await _answered_call(env)
    await ari.channels.redirect(call.id, "PJSIP/desk")
    await call.wait_ended()
    assert call.transferred_to == "PJSIP/desk"


async def test_dial_delay_keeps_the_far_end_ringing_a_while(env: Env) -> None:
    fake, ari, events = env
    fake.dial_delay = 0.05
    await ari.channels.originate("PJSIP/bob", app=APP, channel_id="slow")
    await events.wait(lambda e: e.type == "Dial")
    assert not fake.call("slow").answered
    await fake.call("slow").wait_answered()
