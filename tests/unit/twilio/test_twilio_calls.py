"""Twilio calls through the real SDK and the real Media Streams message shapes: routed
by the app's own routes, DTMF, hang-up both ways, signatures, transfer TwiML,
originate outcomes, recordings delivered through a sink."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from twilio_rig import make_app, running

from voxtra import CallBusy, CallEndReason, CallFailed, CallNoAnswer, CallSession, VoxtraApp
from voxtra.errors import NotSupported, RecordingError, VoxtraError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers.http import current_scope, shared_client
from voxtra.recording.naming import InvalidRecordingName
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import FakeTwilio, serve_asgi
from voxtra.twilio import NoAsterisk, TwilioApiError, TwilioBackend

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_inbound_call_is_routed_by_to_and_gathers_dtmf(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    seen: dict[str, Any] = {}

    @app.route("+15550100")
    async def sales(call: CallSession) -> None:
        await call.answer()
        seen.update(
            backend=call.backend,
            caller=call.caller_id,
            called=call.called_number,
            id=call.id,
        )
        seen["digits"] = await call.gather(4, first_digit_timeout=5)
        for attempt in (call.hold(), call.play_file("hello-world"), call.send_dtmf("1")):
            with pytest.raises(NotSupported, match="twilio"):
                await attempt

    @app.default
    async def other(call: CallSession) -> None:
        seen["wrong"] = call.called_number

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url, to="+15550100", from_="+15550199")
        await _until(lambda: "id" in seen)
        await phone.press("12#")
        await phone.wait_ended(5)
        await _until(lambda: not app.active_sessions)

    assert "wrong" not in seen
    assert seen["backend"] == "twilio"
    assert (seen["caller"], seen["called"]) == ("+15550199", "+15550100")
    assert seen["id"] == phone.call.sid
    assert seen["digits"] == "12"
    # The handler returned: the app hung the call up through the REST API.
    assert phone.call.statuses == ["completed"]
    assert ("POST", f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{phone.call.sid}.json") in (
        twilio.requests
    )
    assert phone.parameters["From"] == "+15550199" and phone.parameters["To"] == "+15550100"
    assert "<Connect><Stream" in phone.twiml


async def test_caller_hangup_ends_the_call_at_once(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    outcome: dict[str, Any] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        outcome["call"] = call
        try:
            await call.listen_dtmf(timeout=30)
        except Exception as exc:  # CallEnded
            outcome["raised"] = type(exc).__name__

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await _until(lambda: "call" in outcome)
        await phone.hangup()
        await _until(lambda: "raised" in outcome, 3)
        await _until(lambda: not app.active_sessions)
    assert outcome["raised"] == "CallEnded"
    assert outcome["call"].end_reason is CallEndReason.REMOTE
    assert phone.call.statuses == []  # nothing to hang up: the caller did


async def test_unsigned_or_forged_requests_are_refused(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    async with running(app, fake_asterisk, twilio) as rig:
        params = {"CallSid": "CA1", "From": "+1", "To": "+2", "Direction": "inbound"}
        plain = await twilio.http.post(rig.backend.voice_url, data=params)
        forged = await twilio.http.post(
            rig.backend.voice_url,
            data={**params, "To": "+3"},
            headers=twilio.signed_headers(rig.backend.voice_url, params),
        )
        signed = await twilio.post_signed(rig.backend.voice_url, params)
        with pytest.raises(Exception):  # noqa: B017 - the handshake is refused
            ws = await twilio.http.ws_connect(rig.backend.stream_url)
            await ws.receive(timeout=2)
            raise ConnectionError(ws.close_code)
    assert (plain.status, forged.status, signed.status) == (403, 403, 200)
    assert rig.backend.rejected == 3
    assert not app.active_sessions


def holding_app(tmp_path: Path, twilio: FakeTwilio) -> tuple[VoxtraApp, list[CallSession]]:
    """An app whose default handler holds each call until it ends, and those calls."""
    app = make_app(tmp_path, twilio)
    handled: list[CallSession] = []

    @app.default
    async def handler(call: CallSession) -> None:
        handled.append(call)
        await call.wait_ended()

    return app, handled


def _start(call_sid: str, parameters: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "start": {
                "streamSid": "MZforged",
                "callSid": call_sid,
                "customParameters": parameters,
            },
        }
    )


async def test_a_replayed_stream_signature_cannot_start_a_call_twilio_did_not_announce(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # The stream's X-Twilio-Signature covers its URL only, the same for every call: one
    # seen once (a proxy's log) opens the socket again. Before, any start message on it
    # became a call routed by the app, with whatever From and To it said.
    app, handled = holding_app(tmp_path, twilio)

    async with running(app, fake_asterisk, twilio) as rig:
        real = await twilio.call_in(rig.backend.voice_url, from_="+15550111")
        await _until(lambda: len(handled) == 1)
        token = real.parameters["VoxtraStreamToken"]
        url = rig.backend.stream_url
        for parameters in (
            {"From": "+15550666", "To": "+15550100"},  # no token
            {"From": "+15550666", "To": "+15550100", "VoxtraStreamToken": token},  # another's
        ):
            ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
            await ws.send_str(_start("CAforged" + "0" * 24, parameters))
            await ws.receive(timeout=5)  # closed by the app
            assert ws.closed and ws.close_code == 1008
        # The real call's own start, sent again on a new socket: one stream per call.
        ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
        await ws.send_str(_start(real.call.sid, dict(real.parameters)))
        await ws.receive(timeout=5)
        assert ws.closed and ws.close_code == 1008
        assert [c.caller_id for c in handled] == ["+15550111"]
        assert "VoxtraStreamToken" not in handled[0].metadata["twilio"]
        assert rig.backend.rejected == 3
        await real.hangup()
        await _until(lambda: not app.active_sessions)


@pytest.mark.parametrize(
    ("call_sid", "token"),
    [
        ("CA" + "0" * 32, "\u00b2.x"),  # "²" passes str.isdigit(), int() refuses it
        ("CA" + "0" * 32, "123.\u00e9"),  # compare_digest() raises on non-ASCII str
        ("CA" + "0" * 32, "123.\ud800"),  # a lone surrogate: not even encodable
        ("CA" + "0" * 32, "9" * 5000 + ".x"),  # int() refuses more than 4300 digits
        ("CA\ud800", "123.x"),  # the CallSid goes into the token's HMAC
    ],
)
async def test_a_stream_token_that_is_no_token_is_a_rejection(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path, call_sid: str, token: str
) -> None:
    # Before, each of these raised in the token's check: a traceback from the server,
    # the socket closed as after a stop (1000) instead of refused (1008), the
    # rejection not counted.
    app, handled = holding_app(tmp_path, twilio)
    async with running(app, fake_asterisk, twilio) as rig:
        url = rig.backend.stream_url
        ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
        await ws.send_str(_start(call_sid, {"VoxtraStreamToken": token}))
        await ws.receive(timeout=5)
        assert ws.closed and ws.close_code == 1008
        assert rig.backend.rejected == 1
    assert handled == []


def _start_shaped(**fields: object) -> str:
    """A start message with a valid-looking CallSid and some fields of odd shapes."""
    start = {"streamSid": "MZforged", "callSid": "CA" + "0" * 32, **fields}
    return json.dumps({"event": "start", "start": start})


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x01 a binary frame",
        "[" * 100000,
        _start_shaped(mediaFormat="x"),
        _start_shaped(customParameters=[1]),
        _start_shaped(tracks=5),
    ],
)
async def test_a_malformed_message_on_the_stream_is_a_protocol_error(
    fake_asterisk: FakeAsterisk,
    twilio: FakeTwilio,
    tmp_path: Path,
    frame: str | bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, these raised KeyError('text') (Starlette's receive_text on a binary
    # frame), RecursionError, AttributeError or TypeError out of the stream's handler:
    # a traceback from the server per attempt, not the protocol error's warning.
    app, handled = holding_app(tmp_path, twilio)
    async with running(app, fake_asterisk, twilio) as rig:
        url = rig.backend.stream_url
        ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        await ws.receive(timeout=5)
        assert ws.closed and ws.close_code == 1000
    assert handled == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "voxtra.twilio.backend"]
    assert any(m.startswith("twilio stream: ") for m in warnings), warnings


async def test_send_audio_is_paced_and_marks_feed_played_ms(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    report: dict[str, Any] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        media = await call.media()
        await call.send_audio(AudioChunk(b"\x10" * 160 * 25, 8000, Codec.ULAW))  # 500 ms
        report["queued_at_start"] = media.queued_ms
        while media.queued_ms > 0:
            await asyncio.sleep(0.02)
        report["played"] = media.played_ms
        await call.send_audio(AudioChunk(b"\x10" * 160 * 100, 8000, Codec.ULAW))  # 2 s
        await asyncio.sleep(0.3)
        await call.flush_audio()
        report["played_at_flush"] = media.played_ms
        report["queued_after_flush"] = media.queued_ms
        await asyncio.sleep(0.3)
        report["played_later"] = media.played_ms

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await phone.wait_ended(10)
    assert report["queued_at_start"] == pytest.approx(500, abs=20)
    assert report["played"] == 500  # confirmed by marks, all of it
    assert 100 <= report["played_at_flush"] - 500 <= 400
    assert report["queued_after_flush"] == 0
    assert report["played_later"] == report["played_at_flush"]  # marks of the clear ignored
    assert phone.clears == 1
    heard = sum(1 for frame in phone.heard if frame != b"\xff" * 160)
    assert 25 + 5 <= heard <= 25 + 20  # 500 ms, then the 0.1-0.4 s before the clear


async def test_transfer_updates_the_call_with_dial_twiml(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    done: dict[str, Any] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        with pytest.raises(NotSupported, match="dialplan"):
            await call.transfer_to("100@sales")
        await call.transfer_to("+15550123", timeout=20, caller_id="+15550001")
        done["call"] = call

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await phone.wait_ended(5)
        await _until(lambda: not app.active_sessions)
    assert done["call"].end_reason is CallEndReason.TRANSFERRED
    assert phone.call.twiml_updates == [
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15550001" '
        'timeout="20"><Number>+15550123</Number></Dial></Response>'
    ]
    assert phone.call.statuses == []  # not hung up after the handler: it left


@pytest.mark.parametrize(
    ("outcome", "error"),
    [("busy", CallBusy), ("no-answer", CallNoAnswer), ("failed", CallFailed)],
)
async def test_originate_outcomes_from_status_callbacks(
    fake_asterisk: FakeAsterisk,
    twilio: FakeTwilio,
    tmp_path: Path,
    outcome: str,
    error: type[Exception],
) -> None:
    app = make_app(tmp_path, twilio)
    twilio.script("+15550777", outcome)
    async with running(app, fake_asterisk, twilio) as rig:
        with pytest.raises(error, match=r"\+15550777"):
            await rig.backend.originate("+15550777", timeout=5)


class StatusesFirst(FakeTwilio):
    """A Twilio that answers ``calls.create`` only once the call has rung and its
    status callbacks were posted: at Twilio the two race, here the statuses win."""

    async def _create_call(self, request: web.Request) -> web.Response:
        response = await super()._create_call(request)
        await asyncio.gather(*self._tasks)  # the call's ring: its statuses, its answer
        return response


@pytest.mark.parametrize(("outcome", "error"), [("busy", CallBusy), ("failed", CallFailed)])
async def test_statuses_before_calls_create_returns_are_not_lost(
    fake_asterisk: FakeAsterisk, tmp_path: Path, outcome: str, error: type[Exception]
) -> None:
    # Before, a status callback for a CallSid no originate had registered yet was
    # dropped: on_ringing never ran, and a busy call waited timeout + 10 s to raise
    # CallNoAnswer instead of CallBusy.
    rang: list[str] = []
    async with StatusesFirst() as twilio:
        twilio.script("+15550777", outcome)
        app = make_app(tmp_path, twilio)
        async with running(app, fake_asterisk, twilio) as rig:
            async with asyncio.timeout(5):
                with pytest.raises(error, match=r"\+15550777"):
                    await rig.backend.originate(
                        "+15550777", timeout=30, on_ringing=lambda: rang.append("ringing")
                    )
            (call,) = twilio.calls.values()
            # Nothing kept once the originate is over, and no status of a call that
            # no originate waits for.
            assert rig.backend._early == {} and rig.backend._outbound == {}
            other = {**twilio.call_params(call), "CallSid": "CA" + "1" * 32}
            await twilio.post_signed(rig.backend.status_url, other)
            assert rig.backend._early == {}
    assert rang == ["ringing"]


async def test_an_answer_before_calls_create_returns_is_an_outbound_call(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Ringing, answered and the stream started, all before the REST answer: the
    # stream waits for the originate, which ran on_ringing once it registered.
    rang: list[str] = []
    async with StatusesFirst() as twilio:
        twilio.script("+15550888", "answer")
        app, handled = holding_app(tmp_path, twilio)
        async with running(app, fake_asterisk, twilio) as rig:
            async with asyncio.timeout(5):
                session = await rig.backend.originate(
                    "+15550888", timeout=30, on_ringing=lambda: rang.append("ringing")
                )
            phone = await twilio.answered.get()
            assert session.id == phone.call.sid and str(session.direction) == "outbound"
            await phone.hangup()
            await _until(lambda: not app.active_sessions)
    assert rang == ["ringing"] and handled == []


async def test_originate_refused_by_twilios_rest_api_is_call_failed(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    twilio.script("+15550778", "refused")
    async with running(app, fake_asterisk, twilio) as rig:
        with pytest.raises(CallFailed, match=r"\+15550778.*Invalid 'To' Phone Number") as caught:
            await rig.backend.originate("+15550778", timeout=5)
    assert "21211" in str(caught.value)


async def test_rest_errors_are_voxtra_errors_with_twilios_status_and_code(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    async with running(app, fake_asterisk, twilio) as rig:
        with pytest.raises(TwilioApiError) as caught:
            await rig.backend.update_call("CA" + "f" * 32, status="completed")
    assert isinstance(caught.value, VoxtraError)
    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert twilio.auth_token not in str(caught.value)


async def test_originate_answered_runs_the_handler_on_an_outbound_session(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    twilio.script("+15550888", "answer")
    ran: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        ran["direction"] = str(call.direction)
        ran["digit"] = await call.listen_dtmf(timeout=5)

    async with running(app, fake_asterisk, twilio) as rig:
        session = await rig.backend.originate("+15550888", handler=handler, metadata={"k": 1})
        phone = await twilio.answered.get()
        await phone.press("7")
        await phone.wait_ended(5)
        await _until(lambda: not app.active_sessions)
    assert session.id == phone.call.sid and session.metadata["k"] == 1
    assert ran == {"direction": "outbound", "digit": "7"}
    assert session.called_number == "+15550888"


async def test_an_answer_after_originate_gave_up_is_hung_up_not_routed(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # Cancelled once the callee had answered but before its stream came: "canceled" no
    # longer ends an answered call at Twilio. Before, the stream then found no
    # originate waiting and became an inbound call (the app's default handler talking
    # to the callee), and the call stayed up.
    app, handled = holding_app(tmp_path, twilio)

    twilio.script("+15550999", "answer")
    twilio.answer_delay = 0.5  # answered, its stream half a second later
    async with running(app, fake_asterisk, twilio) as rig:
        placing = asyncio.ensure_future(rig.backend.originate("+15550999", timeout=5))
        await _until(lambda: any(c.status == "in-progress" for c in twilio.calls.values()))
        placing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await placing
        phone = await asyncio.wait_for(twilio.answered.get(), 5)  # its stream came
        await phone.wait_ended(5)
        (call,) = twilio.calls.values()
        await _until(lambda: call.status == "completed")
    assert handled == [] and not app.active_sessions
    assert call.statuses == ["canceled", "completed"]


class SlowCreate(FakeTwilio):
    """A Twilio slow to answer ``calls.create``: it has the request (:attr:`arrived`),
    makes the call only once :attr:`release` is set, and with ``ring_first`` answers
    only once the call has rung out (answered, its stream started)."""

    def __init__(self, *, ring_first: bool = False) -> None:
        super().__init__()
        self.ring_first = ring_first
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def _create_call(self, request: web.Request) -> web.Response:
        await request.post()  # the whole request is Twilio's, whatever the client does next
        self.arrived.set()
        await self.release.wait()
        response = await super()._create_call(request)
        if self.ring_first:
            await asyncio.gather(*self._tasks)
        return response


async def test_an_originate_cancelled_during_calls_create_cancels_the_call(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Cancelled while calls.create was out: Twilio made the call all the same, after
    # the cancel. Before, nobody read its answer: the call rang on for its full ring
    # time (here 5 s, then answered into a stream no originate waited for).
    async with SlowCreate() as twilio:
        twilio.script("+15550999", "answer")
        twilio.ring_s = 5.0
        app, handled = holding_app(tmp_path, twilio)
        async with running(app, fake_asterisk, twilio) as rig:
            placing = asyncio.ensure_future(rig.backend.originate("+15550999", timeout=30))
            await asyncio.wait_for(twilio.arrived.wait(), 5)
            placing.cancel()
            twilio.release.set()
            with pytest.raises(asyncio.CancelledError):
                await placing
            await _until(lambda: [c.status for c in twilio.calls.values()] == ["canceled"], 3)
            (call,) = twilio.calls.values()
            assert call.statuses == ["canceled"] and call.phone is None
            assert rig.backend._outbound == {} and rig.backend._early == {}
    assert handled == []


async def test_an_answer_before_a_cancelled_calls_create_returns_is_hung_up(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Cancelled during calls.create, and the call answered (its stream waiting for its
    # originate) before Twilio's answer came: "canceled" does not end it, the stream
    # hangs it up. Before, the stream waited 5 s, then became an inbound call.
    async with SlowCreate(ring_first=True) as twilio:
        twilio.script("+15550999", "answer")
        app, handled = holding_app(tmp_path, twilio)
        async with running(app, fake_asterisk, twilio) as rig:
            placing = asyncio.ensure_future(rig.backend.originate("+15550999", timeout=30))
            await asyncio.wait_for(twilio.arrived.wait(), 5)
            placing.cancel()
            twilio.release.set()
            with pytest.raises(asyncio.CancelledError):
                await placing
            phone = await asyncio.wait_for(twilio.answered.get(), 5)
            await phone.wait_ended(3)
            (call,) = twilio.calls.values()
            await _until(lambda: call.status == "completed", 3)
            assert sorted(call.statuses) == ["canceled", "completed"]
    assert handled == [] and not app.active_sessions


async def test_recording_is_fetched_and_delivered_through_the_sink(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    names: dict[str, str] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        names["name"] = await call.record_start("twilio-test")
        await call.send_audio(AudioChunk(b"\x10" * 160 * 25, 8000, Codec.ULAW))
        await asyncio.sleep(0.8)
        assert await call.record_stop() == "twilio-test"

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await phone.wait_ended(10)
        await _until(lambda: not app.active_sessions)
        assert app.recordings is not None
        meta = await app.recordings.wait_delivered("twilio-test", timeout=10)
    sizes = _stored(tmp_path / "recordings", "twilio-test*.wav")
    assert len(sizes) == 1 and meta.call_id == phone.call.sid
    assert meta.end_reason == "stopped"
    assert sizes[0] > 8000 * 2 * 2 * 0.5  # stereo PCM16, >= 0.5 s


async def test_two_record_starts_at_once_start_one_recording(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # Before, both passed the "already recording" check while the first one's REST
    # request was under way: two recordings at Twilio, the first never stopped nor
    # delivered (the control kept only the second).
    app = make_app(tmp_path, twilio)
    started: list[Any] = []

    @app.default
    async def handler(call: CallSession) -> None:
        started.extend(
            await asyncio.gather(
                call.record_start("first"), call.record_start("second"), return_exceptions=True
            )
        )
        await call.record_stop()

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await phone.wait_ended(10)
        await _until(lambda: not app.active_sessions)
    assert started[0] == "first"
    assert isinstance(started[1], RecordingError) and "already recording" in str(started[1])
    assert len(twilio.recordings) == 1


@pytest.mark.parametrize("name", ["../../etc/passwd", "my recording", ".hidden"])
async def test_a_bad_recording_name_is_refused_before_twilio_records(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path, name: str
) -> None:
    # Before, Twilio took any name: the recording ran at Twilio and its delivery failed
    # at the end (the sinks check names), as Asterisk's recorder refuses it up front.
    app = make_app(tmp_path, twilio)
    refused: list[BaseException] = []

    @app.default
    async def handler(call: CallSession) -> None:
        try:
            await call.record_start(name)
        except RecordingError as exc:
            refused.append(exc)

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await phone.wait_ended(10)
        await _until(lambda: not app.active_sessions)
    assert len(refused) == 1 and isinstance(refused[0], InvalidRecordingName)
    assert twilio.recordings == {}


def _stored(folder: Path, pattern: str) -> list[int]:
    return [path.stat().st_size for path in folder.rglob(pattern)]


async def test_a_twilio_only_app_runs_without_asterisk(
    twilio: FakeTwilio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voxtra.ari")
    app = make_app(tmp_path, twilio)
    transport = NoAsterisk()
    app.use_transport(transport)
    answered: list[str] = []

    @app.default
    async def handler(call: CallSession) -> None:
        await call.answer()
        answered.append(call.called_number)

    backend = TwilioBackend(app)
    await app.start(timeout=5)
    try:
        async with serve_asgi(backend.asgi()) as url:
            backend.public_url = url
            phone = await twilio.call_in(backend.voice_url, to="+15550100")
            await phone.wait_ended(5)
            await _until(lambda: not app.active_sessions)
    finally:
        await app.stop(deadline=1)
        await backend.aclose()
    assert answered == ["+15550100"] and phone.call.statuses == ["completed"]
    # Only the app's start-up requests (info, lists, its Stasis app and event filter, the
    # event stream's registration) reached the empty Asterisk: nothing about the call,
    # no channel, bridge or recording made.
    about_the_call = [
        (method, path)
        for method, path in transport.requests
        if phone.call.sid in path
        or (method != "GET" and path.startswith(("/channels", "/bridges", "/recordings")))
    ]
    assert about_the_call == []
    # Its start-up says nothing of an Asterisk it does not have: no failed event filter,
    # no connection to the settings' ARI address.
    ari_lines = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("voxtra.ari")
    ]
    assert (logging.INFO, "ARI events connected to http://no-asterisk.invalid") in ari_lines
    assert [m for level, m in ari_lines if level >= logging.WARNING] == []


async def test_record_ends_on_a_key_or_the_hangup(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    results: list[Any] = []

    @app.default
    async def handler(call: CallSession) -> None:
        with pytest.raises(NotSupported, match=r"record\(silence_timeout=...\)"):
            await call.record(silence_timeout=3)
        results.append(await call.record("by-key", finish_on_key="#", max_length=20))
        results.append(await call.record("by-length", max_length=1))
        results.append(await call.record("by-hangup", max_length=20))

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url)
        await _until(lambda: len(twilio.recordings) == 1)
        await phone.press("5#")
        await _until(lambda: len(twilio.recordings) == 3, 10)
        await phone.hangup()
        await _until(lambda: len(results) == 3)
        assert app.recordings is not None
        metas = [await app.recordings.wait_delivered(r.name, timeout=10) for r in results]
    assert [(r.name, r.reason, r.key) for r in results] == [
        ("by-key", "finish_on_key", "#"),
        ("by-length", "max_length", None),
        ("by-hangup", "hangup", None),
    ]
    assert [m.end_reason for m in metas] == ["finish_on_key", "max_length", "hangup"]


async def test_played_ms_is_what_the_phone_played_not_what_was_sent(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    """With 100 ms of network delay each way, audio sent is not audio played: the
    confirmed position (marks) stays behind what the phone has played by about the
    marks' way back, while counting sent frames would run ahead of it."""
    app = make_app(tmp_path, twilio)
    report: dict[str, Any] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        media = await call.media()
        await call.send_audio(AudioChunk(b"\x10" * 160 * 100, 8000, Codec.ULAW))  # 2 s
        await asyncio.sleep(1.0)
        report["sent_ms"] = media.stats.frames_out * 20
        await call.flush_audio()
        report["played_ms"] = media.played_ms
        await asyncio.sleep(0.6)  # the clear reaches the phone 100 ms later

    async with running(app, fake_asterisk, twilio) as rig:
        phone = await twilio.call_in(rig.backend.voice_url, latency=0.1)
        await phone.wait_ended(10)
    heard_ms = 20 * sum(1 for frame in phone.heard if frame != b"\xff" * 160)
    # Sent ran ahead of what the phone played by the first way and the cushion...
    assert report["sent_ms"] >= heard_ms - 60
    # ...while what the marks confirmed is behind it: the clear's way there and the
    # marks' way back (200 ms here), within a mark's 60 ms and a loaded box's slack.
    lag = heard_ms - report["played_ms"]
    print(f"\nheard {heard_ms} ms, sent {report['sent_ms']} ms, confirmed {report['played_ms']} ms")
    assert 60 <= lag <= 500, (heard_ms, report)


async def test_a_stream_gets_the_apps_shared_http_clients_from_a_server_task_outside(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # As under uvicorn: the app starts in the lifespan's task, and the web server's
    # connections (the stream's handler among them) run in tasks that never saw it.
    app = make_app(tmp_path, twilio)
    seen: dict[str, Any] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        seen["http"] = shared_client("test", object)

    backend = TwilioBackend(app)
    started, done = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with fake_asterisk.serve(app):
            started.set()
            await done.wait()

    life = asyncio.create_task(lifespan())
    await started.wait()
    assert current_scope() is None  # the app's scope is the lifespan task's alone
    try:
        async with serve_asgi(backend.asgi()) as url:
            backend.public_url = url
            phone = await twilio.call_in(backend.voice_url)
            await _until(lambda: "http" in seen)
            await phone.wait_ended(5)
            await _until(lambda: not app.active_sessions)
    finally:
        await backend.aclose()
        done.set()
        await life
    assert seen["http"] is not None
