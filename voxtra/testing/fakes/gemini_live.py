"""FakeGeminiLive: Gemini's Live API WebSocket (``BidiGenerateContent``) on loopback.

The real ``google-genai`` SDK connects to it unchanged (``client.aio.live.connect``):
the path ``/ws/google.ai.generativelanguage.<version>.GenerativeService.BidiGenerateContent``,
the key in ``x-goog-api-key``, over TLS (the SDK always dials ``wss://``; the fake makes
a self-signed certificate for 127.0.0.1 and hands out a client context that trusts it,
``fake.client_ssl_context``). Messages as in the Live API reference: the first client
message is ``setup`` (answered with ``setupComplete``), then ``realtimeInput`` (base64
``audio/pcm;rate=16000``), ``clientContent`` (turns, ``turnComplete``) and
``toolResponse``; the server sends ``voiceActivity`` (``ACTIVITY_START`` /
``ACTIVITY_END``), ``serverContent`` (``inputTranscription``, ``modelTurn`` parts with
``inlineData`` ``audio/pcm;rate=24000``, ``outputTranscription``, ``interrupted``,
``generationComplete``, ``turnComplete``) and ``toolCall``.

Like FakeOpenAIRealtime: an energy VAD on the audio it is sent finds the caller's
turns, each turn takes the next of ``transcripts`` and is answered with the next
:class:`RealtimeReply` (a 440 Hz tone, ``ms_per_word`` per word); a ``clientContent``
turn is answered with its text's last line spoken as is (a model following "say
exactly: ..."). Speech over an answer interrupts it, as the service's default
``START_OF_ACTIVITY_INTERRUPTS`` does.

Session resumption: a ``setup`` with ``sessionResumption`` gets a
``sessionResumptionUpdate`` (``newHandle``, ``resumable``) after ``setupComplete`` and
after each completed turn; a later ``setup`` carrying one of those handles resumes that
conversation (``GeminiConnection.resumed_from``, its ``turns`` start with the old ones).
An unknown handle closes the socket with code 1007 "Invalid session handle" (what the
SDK reports from the service for one, as users have seen it: the reference does not
document it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import ssl
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from voxtra.testing.fakes._server import (
    RealtimeReply,
    SpeechServiceFake,
    WebSocketSession,
    tone_pcm16,
)

__all__ = ["FakeGeminiLive", "GeminiConnection"]

PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


@dataclass
class GeminiConnection:
    """What one client connection did, for the test's assertions."""

    headers: dict[str, str]
    api_version: str = ""
    setup: dict[str, Any] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    """Every client message except ``realtimeInput`` audio (counted in audio_bytes)."""
    audio_bytes: int = 0
    audio_mime_types: set[str] = field(default_factory=set)
    turns: list[tuple[str, str]] = field(default_factory=list)
    """The server's conversation: ``(role, text)``; ``("tool", name)`` for calls."""
    interruptions: int = 0
    resumed_from: str | None = None
    handles: list[str] = field(default_factory=list)
    """The resumption handles sent on this connection."""
    closed: bool = False

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m[kind] for m in self.received if kind in m]


def _self_signed() -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh certificate for 127.0.0.1, and the certificate
    (PEM) a client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voxtra fake")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server.load_cert_chain(cert_file, key_file)
    return server, cert_pem.decode()


_OPAQUE = {"parametersJsonSchema", "parameters", "args", "response", "responseJsonSchema"}
"""Fields whose value is the user's data (a schema, arguments): their keys stay as sent."""


def _camel(value: Any) -> Any:
    """Protobuf JSON takes both ``snake_case`` and ``lowerCamelCase`` field names (the
    SDK sends a mix); the fake reads them all as lowerCamelCase."""
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        head, *rest = key.split("_")
        name = head + "".join(w[:1].upper() + w[1:] for w in rest)
        out[name] = item if name in _OPAQUE else _camel(item)
    return out


def _bytes(text: str) -> bytes:
    """Protobuf JSON bytes: standard or URL-safe base64, padded or not (the SDK sends
    URL-safe without padding)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


class FakeGeminiLive(SpeechServiceFake[GeminiConnection]):
    """Fake Gemini Live service; see the module doc. Point the SDK at it with
    ``genai.Client(api_key=..., http_options={"base_url": fake.base_url,
    "async_client_args": {"ssl": fake.client_ssl_context}})``. The script and the
    VAD's options are :class:`SpeechServiceFake`'s; speech stops after ``silence_ms``."""

    def __init__(
        self, api_key: str = "test-key", *, silence_ms: float = 500.0, **options: Any
    ) -> None:
        server_ssl, pem = _self_signed()
        self.certificate_pem = pem
        """The server's certificate: a client context in another process trusts it
        with ``ssl.create_default_context(cadata=fake.certificate_pem)``."""
        self.client_ssl_context = ssl.create_default_context(cadata=self.certificate_pem)
        super().__init__(api_key, ssl_context=server_ssl, **options)
        self.silence_ms = silence_ms
        self.think_s = 0.0
        """Seconds before an answer's first message (a model taking its time)."""
        self.silent_next = 0
        """The next that many answers (to a caller's turn or a ``clientContent`` turn) never
        come: no message at all, until the caller's speech interrupts the turn or the
        connection ends. The socket stays alive, as in the stalls users report of the Live
        API. The script is not used up."""
        self.handles: dict[str, list[tuple[str, str]]] = {}
        """Resumable sessions: handle -> the conversation (``turns``) at that point."""
        self.app.router.add_get(PATH, self._live_socket)

    @property
    def base_url(self) -> str:
        return self.url

    async def go_away(self, time_left: str = "10s") -> None:
        """Announce on every live connection that the service will close it
        (``goAway``, as the service does some minutes into a connection)."""
        for session in list(self._live):
            assert isinstance(session, _Session)
            await session.send({"goAway": {"timeLeft": time_left}})

    async def _live_socket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response(
                {"error": {"code": 403, "message": "API key not valid.", "status": "DENIED"}},
                status=403,
            )
        conn = GeminiConnection(dict(request.headers), request.match_info["version"])
        return await self.serve(request, conn, lambda ws: _Session(self, ws, conn, request))


class _Session(WebSocketSession):
    def __init__(
        self,
        fake: FakeGeminiLive,
        ws: web.WebSocketResponse,
        conn: GeminiConnection,
        request: web.Request,
    ) -> None:
        super().__init__(ws, request)
        self.fake, self.conn = fake, conn
        self.answer: asyncio.Task[None] | None = None
        self.tool_wait: asyncio.Future[dict[str, Any]] | None = None
        self.detector = fake.vad()
        self.carry = b""

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_json(message)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                message = _camel(json.loads(msg.data))
                if "setup" in message:
                    self.conn.setup = message["setup"]
                    self.conn.received.append(message)
                    if not await self.setup():
                        return
                elif "realtimeInput" in message:
                    await self.realtime_input(message["realtimeInput"])
                elif "clientContent" in message:
                    self.conn.received.append(message)
                    await self.client_content(message["clientContent"])
                elif "toolResponse" in message:
                    self.conn.received.append(message)
                    for response in message["toolResponse"].get("functionResponses", []):
                        self.conn.turns.append(("tool_response", json.dumps(response)))
                    if self.tool_wait is not None and not self.tool_wait.done():
                        self.tool_wait.set_result(message["toolResponse"])
                else:
                    self.conn.received.append(message)
        finally:
            if self.answer is not None:
                self.answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.answer

    async def setup(self) -> bool:
        resumption = self.conn.setup.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if handle:
            turns = self.fake.handles.get(str(handle))
            if turns is None:
                await self.ws.close(code=1007, message=b"Invalid session handle")
                return False
            self.conn.resumed_from = str(handle)
            self.conn.turns = list(turns)
        await self.send({"setupComplete": {"sessionId": uuid.uuid4().hex}})
        await self.resumable()
        return True

    async def resumable(self) -> None:
        """A new resumption handle for the conversation so far, if the client asked."""
        if self.conn.setup.get("sessionResumption") is None:
            return
        handle = f"h_{uuid.uuid4().hex[:16]}"
        self.fake.handles[handle] = list(self.conn.turns)
        self.conn.handles.append(handle)
        await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    async def realtime_input(self, data: dict[str, Any]) -> None:
        audio = data.get("audio")
        if not audio:
            self.conn.received.append({"realtimeInput": data})
            return
        self.conn.audio_mime_types.add(str(audio.get("mimeType")))
        raw = _bytes(str(audio.get("data") or ""))
        self.conn.audio_bytes += len(raw)
        raw = self.carry + raw
        step = 640  # 20 ms of 16 kHz PCM16
        whole = len(raw) - len(raw) % step
        self.carry = raw[whole:]
        for i in range(0, whole, step):
            change = self.detector.push(raw[i : i + step], self.fake.silence_ms)
            if change == "start":
                await self.speech_started()
            elif change == "stop":
                await self.speech_stopped()

    async def speech_started(self) -> None:
        await self.send({"voiceActivity": {"type": "ACTIVITY_START"}})
        if self.answer is not None and not self.answer.done():
            self.answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.answer
            self.conn.interruptions += 1
            await self.send({"serverContent": {"interrupted": True}})

    async def speech_stopped(self) -> None:
        await self.send({"voiceActivity": {"type": "ACTIVITY_END"}})
        text = self.fake.next_transcript()
        if self.conn.setup.get("inputAudioTranscription") is not None and text:
            await self.send({"serverContent": {"inputTranscription": {"text": text}}})
            await self.send(
                {"serverContent": {"inputTranscription": {"text": "", "finished": True}}}
            )
        self.conn.turns.append(("user", text))
        self.start_answer(None if self.silent() else self.fake.next_reply())

    async def client_content(self, content: dict[str, Any]) -> None:
        for turn in content.get("turns") or []:
            text = " ".join(str(p.get("text", "")) for p in turn.get("parts") or [])
            self.conn.turns.append((str(turn.get("role")), text))
        if not content.get("turnComplete"):
            return
        last = self.conn.turns[-1][1] if self.conn.turns else ""
        lines = [line for line in last.splitlines() if line.strip()]
        self.start_answer(
            None if self.silent() else RealtimeReply(text=lines[-1].strip() if lines else "")
        )

    def silent(self) -> bool:
        """Whether this answer is one of ``silent_next``'s."""
        if self.fake.silent_next > 0:
            self.fake.silent_next -= 1
            return True
        return False

    def start_answer(self, reply: RealtimeReply | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.cancel()
        self.answer = asyncio.create_task(self.respond(reply))

    async def respond(self, reply: RealtimeReply | None) -> None:
        """Send the answer (``reply`` None: a silent one, see ``silent_next``)."""
        spoken: list[str] = []
        try:
            if reply is None:
                await asyncio.Event().wait()  # (until cancelled)
                return
            if self.fake.think_s:
                await asyncio.sleep(self.fake.think_s)
            if reply.tool_calls:
                calls = [
                    {"id": f"fc_{uuid.uuid4().hex[:12]}", "name": name, "args": dict(args)}
                    for name, args in reply.tool_calls
                    if not isinstance(args, str)
                ]
                for call in calls:
                    self.conn.turns.append(("tool", f"{call['name']} {json.dumps(call['args'])}"))
                self.tool_wait = asyncio.get_running_loop().create_future()
                await self.send({"toolCall": {"functionCalls": calls}})
                await self.tool_wait
                reply = self.fake.next_reply()
            for word in reply.text.split():
                await self.send({"serverContent": {"outputTranscription": {"text": word + " "}}})
                left = self.fake.ms_per_word
                while left > 0:
                    ms = min(self.fake.chunk_ms, left)
                    data = base64.b64encode(tone_pcm16(ms, 24000)).decode()
                    part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
                    await self.send({"serverContent": {"modelTurn": {"parts": [part]}}})
                    left -= ms
                    if self.fake.chunk_delay:
                        await asyncio.sleep(self.fake.chunk_delay)
                spoken.append(word)
            await self.send({"serverContent": {"generationComplete": True}})
            await self.send({"serverContent": {"turnComplete": True}})
        finally:
            self.conn.turns.append(("model", " ".join(spoken)))
        await self.resumable()
