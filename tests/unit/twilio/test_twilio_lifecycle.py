"""A Twilio call's edges: the app stopping or not running, a transfer whose stream
stops before Twilio's answer, and a stream socket that sends no start (a stranger's,
opened with a replayed signature)."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio_rig import make_app, running

from voxtra import AppNotRunning, CallEndReason, CallSession, VoxtraApp
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import FakeTwilio, TwilioCall
from voxtra.twilio import TwilioBackend
from voxtra.twilio import backend as twilio_backend

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def holding_app(tmp_path: Path, twilio: FakeTwilio) -> tuple[VoxtraApp, list[CallSession]]:
    app = make_app(tmp_path, twilio)
    handled: list[CallSession] = []

    @app.default
    async def handler(call: CallSession) -> None:
        handled.append(call)
        await call.wait_ended()

    return app, handled


async def test_originate_on_an_app_that_is_not_running_places_no_call(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # As VoxtraApp.originate refuses. Before, the call was placed: the callee's phone
    # rang and answered into the webhook's <Reject>, the originate raised CallNoAnswer
    # after timeout + 10 s, and its "canceled" left the answered call up at Twilio.
    app = make_app(tmp_path, twilio)
    twilio.script("+15550888", "answer")
    async with running(app, fake_asterisk, twilio) as rig:
        await app.stop(deadline=1)
        async with asyncio.timeout(5):
            with pytest.raises(AppNotRunning):
                await rig.backend.originate("+15550888", timeout=5)
    assert twilio.calls == {}


class StopBeforeAnswer(FakeTwilio):
    """A Twilio that, given new TwiML for a call, stops its stream and answers the update
    only once the app has seen the stream end: Twilio's answer and the stream's stop
    race, here the stop wins."""

    backend: TwilioBackend | None = None

    async def _update_call(self, request: web.Request) -> web.Response:
        call = self._call(request)
        form = await request.post()
        if "Twiml" in form and call.phone is not None and self.backend is not None:
            await call.phone.stop_stream()
            backend = self.backend
            await _until(lambda: call.sid not in backend.sessions)
        return await super()._update_call(request)


async def test_a_transfer_whose_stream_stops_before_twilios_answer_is_transferred(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Before, the stream's end came first and ended the call as "remote" (the caller
    # hung up), though it left by the app's transfer.
    done: dict[str, Any] = {}
    async with StopBeforeAnswer() as twilio:
        app = make_app(tmp_path, twilio)

        @app.default
        async def handler(call: CallSession) -> None:
            done["call"] = call
            await call.transfer_to("+15550123")

        async with running(app, fake_asterisk, twilio) as rig:
            twilio.backend = rig.backend
            phone = await twilio.call_in(rig.backend.voice_url)
            await phone.wait_ended(5)
            await _until(lambda: not app.active_sessions)
    assert done["call"].end_reason is CallEndReason.TRANSFERRED
    assert len(phone.call.twiml_updates) == 1 and phone.call.statuses == []


async def test_a_stream_that_starts_once_the_app_is_stopping_is_hung_up_not_routed(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # The webhook answered just before stop(); the stream starts after it. Before, the
    # call was routed: its handler ran in the stopped app (with a ticker, a writer and
    # the call's tasks nobody would end) and the call stayed up at Twilio.
    app, handled = holding_app(tmp_path, twilio)
    async with running(app, fake_asterisk, twilio) as rig:
        call = TwilioCall(
            "CA" + "5" * 32, "+15550100", "+15550199", "inbound", url=rig.backend.voice_url
        )
        twilio.calls[call.sid] = call
        answer = await twilio.post_signed(call.url, twilio.call_params(call))
        stream = ET.fromstring(await answer.text()).find("./Connect/Stream")
        assert stream is not None
        parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        await app.stop(deadline=1)
        url = stream.attrib["url"]
        ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
        start = {"streamSid": "MZ" + "5" * 32, "callSid": call.sid}
        await ws.send_str(
            json.dumps({"event": "start", "start": {**start, "customParameters": parameters}})
        )
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert call.statuses == ["completed"]  # hung up at Twilio
    assert handled == [] and not app.active_sessions


def _media(size: int) -> str:
    payload = base64.b64encode(b"\xff" * size).decode("ascii")
    return json.dumps({"event": "media", "media": {"payload": payload}})


@pytest.mark.parametrize(
    "opening",
    [
        None,  # nothing at all
        _media(160),  # audio before any start: nobody's call
        json.dumps({"event": "connected", "padding": "x" * 100_000}),  # too long to parse
    ],
)
async def test_a_stream_socket_without_a_prompt_start_is_closed(
    fake_asterisk: FakeAsterisk,
    twilio: FakeTwilio,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    opening: str | None,
) -> None:
    # The stream's signature covers its URL only: seen once, it opens the socket again.
    # Before, such a socket stayed open for ever, and whatever it sent was parsed (a
    # 16 MB media message held the event loop 0.15 s, every call's audio with it).
    monkeypatch.setattr(twilio_backend, "START_WAIT", 0.5)
    app, handled = holding_app(tmp_path, twilio)
    async with running(app, fake_asterisk, twilio) as rig:
        url = rig.backend.stream_url
        ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
        if opening is not None:
            await ws.send_str(opening)
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call"}))
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert handled == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "voxtra.twilio.backend"]
    assert any(m.startswith("twilio stream: ") for m in warnings), warnings
