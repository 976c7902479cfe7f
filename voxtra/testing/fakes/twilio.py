"""A local Twilio: the REST endpoints Voxtra uses, and phones on Media Streams.

:class:`FakeTwilio` is an ``aiohttp`` server the real ``twilio`` SDK talks to (point
``twilio.api_base_url`` at :attr:`FakeTwilio.url`): ``Calls`` create / update / fetch
and a call's ``Recordings`` create / update, a recording's fetch and its media
(``/Recordings/RE....wav``), with HTTP basic auth (account SID, auth token) checked
as Twilio does. :attr:`FakeTwilio.open_rest_connections` says whether a client left
its connections open (one never closed).

A :class:`TwilioPhone` is the caller's side of one call as Twilio would run it: it
posts the app's webhook (signed with ``X-Twilio-Signature``), reads the TwiML's
``<Connect><Stream>``, opens the stream's WebSocket (signed too) and speaks the
Media Streams protocol with its real message shapes (``connected``, ``start`` with
the ``<Parameter>``\\ s as ``customParameters``, ``media``, ``dtmf``, ``stop``).
Like Twilio it sends the caller's audio continuously, 20 ms of mu-law per message
(silence when the caller says nothing, a WAV's speech when it does), plays what the
app sends in real time into :attr:`TwilioPhone.heard` (one 20 ms frame per tick,
silence when nothing is buffered), echoes each ``mark`` once the audio before it has
been played, and on ``clear`` drops its buffer and echoes the pending marks at once.

Outbound calls (``calls.create``) ring the number's scripted outcome
(:meth:`FakeTwilio.script`): a phone answers, or the call ends ``busy``,
``no-answer`` or ``failed``, with the status callbacks Twilio would send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import time
import uuid
import wave
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvicorn
from aiohttp import web
from twilio.request_validator import RequestValidator

from voxtra.ari.client import basic_auth_header
from voxtra.media import g711
from voxtra.media.pacer import Pacer
from voxtra.media.resample import resample_once
from voxtra.testing.audio import read_wav
from voxtra.testing.fakes._server import FakeServer

__all__ = ["FakeTwilio", "TwilioPhone", "serve_asgi"]

logger = logging.getLogger(__name__)

FRAME = 160  # 20 ms of mu-law 8 kHz
SILENCE = b"\xff" * FRAME
ENDED = ("completed", "busy", "no-answer", "failed", "canceled")
"""The statuses of a call that is over."""


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass
class TwilioRecording:
    sid: str
    call_sid: str
    started: float
    start_time: datetime
    status: str = "in-progress"
    wav: bytes = b""


@dataclass
class TwilioCall:
    sid: str
    to: str
    from_: str
    direction: str
    url: str = ""
    status_callback: str = ""
    status: str = "queued"
    twiml_updates: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    """Every status update the app made (``completed``, ``canceled``)."""
    phone: TwilioPhone | None = None

    def resource(self, account_sid: str) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC))
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": self.direction,
            "date_created": now,
            "date_updated": now,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{self.sid}.json",
        }


class FakeTwilio(FakeServer):
    """The REST API and the phone network, for one account (see the module docstring)."""

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "fake-token") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.validator = RequestValidator(auth_token)
        self.calls: dict[str, TwilioCall] = {}
        self.recordings: dict[str, TwilioRecording] = {}
        self.requests: list[tuple[str, str]] = []
        self._rest_connections: set[asyncio.BaseTransport] = set()
        self._outcomes: dict[str, str | Callable[[TwilioPhone], None]] = {}
        self.ring_s = 0.05
        """How long an outbound call rings before its scripted outcome."""
        self.answer_delay = 0.0
        """Seconds from an outbound call's answer (``in-progress``) to its webhook and
        stream: the time in which only ``completed`` ends it (``canceled`` no longer
        does, as at Twilio)."""
        self.answered: asyncio.Queue[TwilioPhone] = asyncio.Queue()
        """Phones that answered an outbound call, in order."""
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        base = f"/2010-04-01/Accounts/{account_sid}"
        self.app.router.add_post(f"{base}/Calls.json", self._create_call)
        self.app.router.add_post(f"{base}/Calls/{{sid}}.json", self._update_call)
        self.app.router.add_get(f"{base}/Calls/{{sid}}.json", self._fetch_call)
        self.app.router.add_post(f"{base}/Calls/{{sid}}/Recordings.json", self._create_recording)
        self.app.router.add_post(
            f"{base}/Calls/{{sid}}/Recordings/{{rsid}}.json", self._update_recording
        )
        self.app.router.add_get(f"{base}/Recordings/{{rsid}}.json", self._fetch_recording)
        self.app.router.add_get(f"{base}/Recordings/{{rsid}}.wav", self._recording_media)

    # -- the phone network -------------------------------------------------------------------

    def script(self, number: str, outcome: str | Callable[[TwilioPhone], None]) -> None:
        """What calling ``number`` does: ``"answer"`` (a phone answers; it goes to
        :attr:`answered`), a callable given the phone once it answered, ``"busy"``,
        ``"no-answer"``, ``"failed"``, or ``"refused"`` (``calls.create`` itself is
        answered 400, as Twilio answers a number it will not call: error 21211)."""
        self._outcomes[number] = outcome

    async def call_in(
        self,
        webhook_url: str,
        *,
        to: str = "+15550100",
        from_: str = "+15550199",
        latency: float = 0.0,
    ) -> TwilioPhone:
        """A caller dials ``to``: Twilio posts the webhook and connects the stream
        (``latency``: the stream's one-way network delay, both ways)."""
        call = TwilioCall(_sid("CA"), to, from_, "inbound", url=webhook_url, status="ringing")
        self.calls[call.sid] = call
        phone = TwilioPhone(self, call, latency=latency)
        await phone.connect()
        return phone

    def signed_headers(self, url: str, params: dict[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}

    async def post_signed(self, url: str, params: dict[str, str]) -> aiohttp.ClientResponse:
        response = await self.http.post(url, data=params, headers=self.signed_headers(url, params))
        await response.read()
        return response

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    def call_params(self, call: TwilioCall) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
        }

    async def _status(self, call: TwilioCall, status: str) -> None:
        call.status = status
        if call.status_callback:
            params = {**self.call_params(call), "CallStatus": status}
            with contextlib.suppress(aiohttp.ClientError):
                await self.post_signed(call.status_callback, params)

    async def _ring(self, call: TwilioCall) -> None:
        outcome = self._outcomes.get(call.to, "no-answer")
        for status in ("initiated", "ringing"):
            # Each status callback is a request the app may answer with a cancel: a
            # canceled call stays so (it rang on once "ringing" overwrote "canceled").
            if call.status in ENDED:
                return
            await self._status(call, status)
        await asyncio.sleep(self.ring_s)
        if call.status != "ringing":
            return  # canceled (or hung up) while it rang
        if isinstance(outcome, str) and outcome != "answer":
            await self._status(call, outcome)
            return
        call.status = "in-progress"
        if self.answer_delay > 0:
            await asyncio.sleep(self.answer_delay)
            if call.status != "in-progress":
                return  # hung up ("completed") before its stream
        phone = TwilioPhone(self, call)
        await phone.connect()
        if callable(outcome):
            outcome(phone)
        self.answered.put_nowait(phone)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def end_call(self, call: TwilioCall, status: str = "completed") -> None:
        """The call ends at Twilio: its stream stops and the status callback says so."""
        if call.phone is not None:
            await call.phone.stop_stream()
        if call.status not in ENDED:
            await self._status(call, status)
        for recording in self.recordings.values():
            if recording.call_sid == call.sid and recording.status == "in-progress":
                self._finish_recording(recording)

    # -- REST ------------------------------------------------------------------------------

    @property
    def open_rest_connections(self) -> int:
        """How many of the connections REST requests came on are still open: a client
        keeps its connections open for the next request (aiohttp's pool) until it is
        closed."""
        return sum(not transport.is_closing() for transport in self._rest_connections)

    def _authorised(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path))
        if request.transport is not None:
            self._rest_connections.add(request.transport)
        auth = basic_auth_header(self.account_sid, self.auth_token)
        if request.headers.get("Authorization") != auth:
            raise web.HTTPUnauthorized(
                text=json.dumps({"code": 20003, "message": "Authenticate", "status": 401}),
                content_type="application/json",
            )

    def _call(self, request: web.Request) -> TwilioCall:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            raise web.HTTPNotFound(
                text=json.dumps({"code": 20404, "message": "not found", "status": 404}),
                content_type="application/json",
            )
        return call

    async def _create_call(self, request: web.Request) -> web.Response:
        self._authorised(request)
        form = await request.post()
        if self._outcomes.get(str(form["To"])) == "refused":
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
                ),
                content_type="application/json",
            )
        call = TwilioCall(
            _sid("CA"),
            str(form["To"]),
            str(form["From"]),
            "outbound-api",
            url=str(form.get("Url", "")),
            status_callback=str(form.get("StatusCallback", "")),
        )
        self.calls[call.sid] = call
        self._spawn(self._ring(call))
        return web.json_response(call.resource(self.account_sid), status=201)

    async def _update_call(self, request: web.Request) -> web.Response:
        self._authorised(request)
        call = self._call(request)
        form = await request.post()
        if "Twiml" in form:
            # New TwiML: Twilio leaves the <Connect><Stream> to run it (a transfer).
            call.twiml_updates.append(str(form["Twiml"]))
            if call.phone is not None:
                self._spawn(call.phone.stop_stream())
        status = form.get("Status")
        if status:
            call.statuses.append(str(status))
            # As at Twilio: "canceled" ends a queued or ringing call only.
            if not (status == "canceled" and call.status == "in-progress"):
                self._spawn(self.end_call(call, str(status)))
        return web.json_response(call.resource(self.account_sid))

    async def _fetch_call(self, request: web.Request) -> web.Response:
        self._authorised(request)
        return web.json_response(self._call(request).resource(self.account_sid))

    def _recording_resource(self, recording: TwilioRecording) -> dict[str, Any]:
        done = recording.status == "completed"
        duration = _wav_seconds(recording.wav) if done else -1
        return {
            "sid": recording.sid,
            "account_sid": self.account_sid,
            "call_sid": recording.call_sid,
            "status": recording.status,
            "channels": 2,
            "duration": str(round(duration)) if done else None,
            "start_time": format_datetime(recording.start_time),
            "date_created": format_datetime(recording.start_time),
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{recording.sid}.json",
        }

    async def _create_recording(self, request: web.Request) -> web.Response:
        self._authorised(request)
        call = self._call(request)
        recording = TwilioRecording(_sid("RE"), call.sid, time.monotonic(), datetime.now(UTC))
        self.recordings[recording.sid] = recording
        if call.phone is not None:
            call.phone.recording_from = len(call.phone.heard)
        return web.json_response(self._recording_resource(recording), status=201)

    def _finish_recording(self, recording: TwilioRecording) -> None:
        call = self.calls[recording.call_sid]
        phone = call.phone
        caller = app = b""
        if phone is not None:
            start = phone.recording_from
            app = b"".join(phone.heard[start:])
            caller = b"".join(phone.sent[start:])
        recording.wav = _dual_wav(caller, app)
        recording.status = "completed"

    async def _update_recording(self, request: web.Request) -> web.Response:
        self._authorised(request)
        recording = self.recordings.get(request.match_info["rsid"])
        if recording is None:
            raise web.HTTPNotFound()
        form = await request.post()
        if form.get("Status") == "stopped" and recording.status == "in-progress":
            self._finish_recording(recording)
        return web.json_response(self._recording_resource(recording))

    async def _fetch_recording(self, request: web.Request) -> web.Response:
        self._authorised(request)
        recording = self.recordings.get(request.match_info["rsid"])
        if recording is None:
            raise web.HTTPNotFound()
        return web.json_response(self._recording_resource(recording))

    async def _recording_media(self, request: web.Request) -> web.Response:
        self._authorised(request)
        recording = self.recordings.get(request.match_info["rsid"])
        if recording is None or recording.status != "completed":
            raise web.HTTPNotFound()
        return web.Response(body=recording.wav, content_type="audio/x-wav")

    async def close(self) -> None:
        for call in list(self.calls.values()):
            if call.phone is not None:
                await call.phone.close()
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
        await super().close()


class TwilioPhone:
    """The caller's side of one Twilio call on a Media Stream (see the module docstring)."""

    def __init__(self, twilio: FakeTwilio, call: TwilioCall, *, latency: float = 0.0) -> None:
        self.twilio = twilio
        self.call = call
        call.phone = self
        self.latency = latency
        """One-way network delay (seconds) of every message, both ways (0: none)."""
        self._delayed_in: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self._delayed_out: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self.stream_sid = _sid("MZ")
        self.twiml = ""
        self.parameters: dict[str, str] = {}
        self.heard: list[bytes] = []
        """What the phone played, one 20 ms mu-law frame per tick since the stream began."""
        self.sent: list[bytes] = []
        """What the caller sent, one frame per tick (the same timeline as ``heard``)."""
        self.recording_from = 0
        self.received: list[dict[str, Any]] = []
        """Every message the app sent, in order (media payloads included)."""
        self.clears = 0
        self.marks_echoed: list[str] = []
        self.said_at: list[int] = []
        """The tick each :meth:`say` began at."""
        self.ended = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._speech: deque[bytes] = deque()
        self._playout: deque[bytes | str] = deque()  # audio chunks and mark names, in order
        self._started_at = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._sequence = 0
        self._chunk = 0

    # -- set-up ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Post the webhook, read its TwiML, open the stream and send connected/start."""
        twilio, call = self.twilio, self.call
        params = twilio.call_params(call)
        response = await twilio.http.post(
            call.url, data=params, headers=twilio.signed_headers(call.url, params)
        )
        self.twiml = await response.text()
        if response.status != 200:
            raise AssertionError(f"webhook answered {response.status}: {self.twiml}")
        root = ET.fromstring(self.twiml)
        stream = root.find("./Connect/Stream")
        if stream is None:
            raise AssertionError(f"no <Connect><Stream> in {self.twiml}")
        url = stream.attrib["url"]
        self.parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        self._ws = await twilio.http.ws_connect(url, headers=twilio.signed_headers(url, {}))
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": twilio.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": call.sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": self.parameters,
                },
                "streamSid": self.stream_sid,
            }
        )
        self._started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(), name=f"twilio-phone-read-{call.sid}"),
            loop.create_task(self._clock(), name=f"twilio-phone-clock-{call.sid}"),
        ]
        if self.latency > 0:
            self._tasks += [
                loop.create_task(self._arrive(), name=f"twilio-phone-in-{call.sid}"),
                loop.create_task(self._depart(), name=f"twilio-phone-out-{call.sid}"),
            ]

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    async def _send(self, message: dict[str, Any]) -> None:
        if self.latency > 0 and message["event"] not in ("connected", "start"):
            self._delayed_out.put_nowait((time.monotonic() + self.latency, json.dumps(message)))
            return
        await self._write(json.dumps(message))

    async def _write(self, text: str) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await self._ws.send_str(text)

    async def _depart(self) -> None:
        while True:
            due, text = await self._delayed_out.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._write(text)

    async def _arrive(self) -> None:
        while True:
            due, data = await self._delayed_in.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._handle(data)

    # -- what the caller does -------------------------------------------------------------

    def say(self, wav: str | Path) -> int:
        """Queue a WAV's speech (any rate) to be sent in real time; the tick it starts."""
        samples, rate = read_wav(wav)
        pcm = samples.astype("<i2").tobytes()
        if rate != 8000:
            pcm = resample_once(pcm, rate, 8000)
        ulaw = g711.pcm16_to_ulaw(pcm)
        ulaw += SILENCE[: -len(ulaw) % FRAME] if len(ulaw) % FRAME else b""
        start = len(self.sent) + len(self._speech)
        self._speech.extend(ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME))
        self.said_at.append(start)
        return start

    async def until_said(self, timeout: float = 30.0) -> None:
        """Until everything queued by :meth:`say` has been sent."""
        deadline = time.monotonic() + timeout
        while self._speech:
            if time.monotonic() > deadline:
                raise TimeoutError("speech not sent")
            await asyncio.sleep(0.02)

    async def press(self, digits: str) -> None:
        for digit in digits:
            await self._send(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": self._next(),
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            )

    async def hangup(self) -> None:
        """The caller hangs up: the stream stops, the call completes."""
        await self.twilio.end_call(self.call)

    async def stop_stream(self) -> None:
        """Twilio ends the stream (a hang-up, or new TwiML for the call)."""
        if self.ended.is_set():
            return
        await self._send(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.twilio.account_sid, "callSid": self.call.sid},
            }
        )
        await self.close()

    async def close(self) -> None:
        self.ended.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def wait_ended(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)

    # -- the two directions in real time ---------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if self.latency > 0:
                    self._delayed_in.put_nowait((time.monotonic() + self.latency, data))
                else:
                    await self._handle(data)
        finally:
            # The app closed the stream (or the network did): the call is over for it.
            self.ended.set()

    async def _handle(self, data: dict[str, Any]) -> None:
        """One message from the app, as it reaches the phone."""
        event = data.get("event")
        if event == "media":
            payload = base64.b64decode(data["media"]["payload"])
            self._playout.append(payload)
            self.received.append({"event": "media", "bytes": len(payload)})
            return
        self.received.append(data)
        if event == "mark":
            self._playout.append(str(data["mark"]["name"]))
            await self._echo_marks()
        elif event == "clear":
            self.clears += 1
            marks = [m for m in self._playout if isinstance(m, str)]
            self._playout.clear()
            for name in marks:
                await self._echo(name)

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append(name)
        await self._send(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    async def _echo_marks(self) -> None:
        while self._playout and isinstance(self._playout[0], str):
            name = self._playout.popleft()
            assert isinstance(name, str)
            await self._echo(name)

    def _play_frame(self) -> bytes:
        out = b""
        while len(out) < FRAME and self._playout:
            item = self._playout[0]
            if isinstance(item, str):
                break  # a mark: echoed once the audio before it is out (below)
            need = FRAME - len(out)
            out += item[:need]
            if len(item) > need:
                self._playout[0] = item[need:]
            else:
                self._playout.popleft()
        return out + SILENCE[len(out) :]

    async def _clock(self) -> None:
        pacer = Pacer(20, start=self._started_at)
        while not self.ended.is_set():
            await pacer.wait()
            frame = self._speech.popleft() if self._speech else SILENCE
            self.sent.append(frame)
            self._chunk += 1
            await self._send(
                {
                    "event": "media",
                    "sequenceNumber": self._next(),
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str(self._chunk * 20),
                        "payload": base64.b64encode(frame).decode("ascii"),
                    },
                    "streamSid": self.stream_sid,
                }
            )
            self.heard.append(self._play_frame())
            await self._echo_marks()

    # -- what the phone heard ---------------------------------------------------------------

    def heard_pcm(self) -> tuple[np.ndarray[Any, Any], int]:
        """What the phone played, as int16 samples at 8 kHz (tick 0 at sample 0)."""
        pcm = g711.ulaw_to_pcm16(b"".join(self.heard))
        return np.frombuffer(pcm, dtype="<i2").copy(), 8000

    def seconds(self, tick: int) -> float:
        return tick * 0.02


def _wav_seconds(wav_bytes: bytes) -> float:
    if not wav_bytes:
        return 0.0
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        return float(reader.getnframes() / reader.getframerate())


def _dual_wav(caller: bytes, app: bytes) -> bytes:
    """Twilio's dual-channel recording: the caller left, the app right, 8 kHz PCM16."""
    n = max(len(caller), len(app))
    left = np.frombuffer(g711.ulaw_to_pcm16(caller.ljust(n, b"\xff")), dtype="<i2")
    right = np.frombuffer(g711.ulaw_to_pcm16(app.ljust(n, b"\xff")), dtype="<i2")
    frames = np.column_stack([left, right]).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(frames)
    return buffer.getvalue()


@contextlib.asynccontextmanager
async def serve_asgi(asgi: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve an ASGI app (the app's Twilio endpoints) on a free port; its base URL."""
    config = uvicorn.Config(asgi, host=host, port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="voxtra-twilio-test-http")
    while not server.started:
        if task.done():
            task.result()
            raise OSError("the ASGI server did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
