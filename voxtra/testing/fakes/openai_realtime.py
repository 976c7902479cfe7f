"""FakeOpenAIRealtime: OpenAI's Realtime WebSocket (``/v1/realtime``) on loopback.

It speaks the GA wire protocol that ``openai`` 2.x/3.x's ``client.realtime.connect()``
uses (the SDK's own event types are generated from OpenAI's API reference, and the
event names and payloads here follow them): ``session.update`` ->
``session.updated``; ``input_audio_buffer.append`` with base64 audio; a server VAD that
answers with ``input_audio_buffer.speech_started`` / ``speech_stopped`` /
``committed``, the user item (``conversation.item.added`` / ``done``) and its input
transcription (``conversation.item.input_audio_transcription.delta`` / ``completed``);
responses (``response.create`` -> ``response.created``, ``response.output_item.added``,
``response.output_audio.delta``, ``response.output_audio_transcript.delta``, their
``.done``, ``response.function_call_arguments.delta`` / ``.done``,
``response.done``); ``response.cancel``; ``conversation.item.create`` and
``conversation.item.truncate`` (-> ``conversation.item.truncated``, or an ``error`` when
``audio_end_ms`` is past the audio, as the service does); ``error`` events.

What the "model" hears and says is scripted: each caller turn (found by the fake's
energy VAD on the audio it is sent) takes the next transcript of ``transcripts``, each
response the next :class:`RealtimeReply`. A ``response.create`` that carries
``instructions`` is answered with the instructions' last line spoken as is (a model
that follows "say exactly: ..."). The answer's audio is a tone, ``ms_per_word`` per
word, in the session's output format (``audio/pcmu``, ``audio/pcma`` or 24 kHz
``audio/pcm``), sent faster than real time as the service does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from voxtra.media import g711
from voxtra.media.frames import Codec
from voxtra.testing.fakes._server import (
    RealtimeReply,
    SpeechServiceFake,
    WebSocketSession,
    tone_pcm16,
)

__all__ = ["FakeOpenAIRealtime", "RealtimeConnection", "RealtimeReply"]

logger = logging.getLogger(__name__)


@dataclass
class _Item:
    id: str
    type: str
    role: str | None = None
    text: str = ""
    audio_ms: float = 0.0
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    truncated_ms: int | None = None

    def wire(self, status: str = "completed") -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type}
        if self.type == "message":
            item["role"] = self.role
            item["status"] = status
            if self.role == "assistant":
                item["content"] = [{"type": "output_audio", "transcript": self.text}]
            elif self.role == "user":
                item["content"] = [{"type": "input_audio", "transcript": self.text or None}]
            else:
                item["content"] = [{"type": "input_text", "text": self.text}]
        elif self.type == "function_call":
            item.update(
                status=status, call_id=self.call_id, name=self.name, arguments=self.arguments
            )
        elif self.type == "function_call_output":
            item.update(call_id=self.call_id, output=self.output)
        return item


@dataclass
class RealtimeConnection:
    """What one client connection did, for the test's assertions."""

    query: dict[str, str]
    headers: dict[str, str]
    session: dict[str, Any] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    """Every client event except ``input_audio_buffer.append`` (counted in audio_bytes)."""
    audio_bytes: int = 0
    items: list[_Item] = field(default_factory=list)
    truncations: list[dict[str, Any]] = field(default_factory=list)
    cancels: int = 0
    closed: bool = False

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]

    @property
    def input_format(self) -> str:
        fmt = self.session.get("audio", {}).get("input", {}).get("format") or {}
        return str(fmt.get("type", "audio/pcm"))

    @property
    def output_format(self) -> str:
        fmt = self.session.get("audio", {}).get("output", {}).get("format") or {}
        return str(fmt.get("type", "audio/pcm"))

    def history(self) -> list[tuple[str, str]]:
        """The server's conversation as ``(role or type, text)`` pairs."""
        out: list[tuple[str, str]] = []
        for item in self.items:
            if item.type == "message":
                out.append((item.role or "", item.text))
            elif item.type == "function_call":
                out.append(("function_call", f"{item.name} {item.arguments}"))
            else:
                out.append(("function_call_output", item.output or ""))
        return out


def _bytes_per_ms(fmt: str) -> float:
    return 48.0 if fmt == "audio/pcm" else 8.0


def _decode(data: bytes, fmt: str) -> bytes:
    if fmt == "audio/pcmu":
        return g711.decode(data, Codec.ULAW)
    if fmt == "audio/pcma":
        return g711.decode(data, Codec.ALAW)
    return data


def _tone(ms: float, fmt: str) -> bytes:
    pcm = tone_pcm16(ms, 24000 if fmt == "audio/pcm" else 8000)
    if fmt == "audio/pcmu":
        return g711.pcm16_to_ulaw(pcm)
    if fmt == "audio/pcma":
        return g711.pcm16_to_alaw(pcm)
    return pcm


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class FakeOpenAIRealtime(SpeechServiceFake[RealtimeConnection]):
    """Fake OpenAI Realtime service. Point the SDK at it with
    ``AsyncOpenAI(api_key=..., base_url=fake.base_url)`` (the SDK derives
    ``ws://.../v1/realtime`` from it) or ``websocket_base_url=fake.websocket_base_url``.

    The script and the VAD's options are :class:`SpeechServiceFake`'s; speech stops
    after the session's ``silence_duration_ms`` (default 500) of silence. ``chunk_ms``
    of answer audio go in each ``response.output_audio.delta``. ``reject`` answers the
    next that many connections with HTTP ``reject_status``.
    """

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        reject: int = 0,
        reject_status: int = 503,
        **options: Any,
    ) -> None:
        super().__init__(api_key, **options)
        self.reject = reject
        self.reject_status = reject_status
        self.fail_next: str | None = None
        """The next response (of any kind) fails with this message (``status: failed``)."""
        self.drop_before: str | None = None
        """The connection is cut (as ``drop()`` does) instead of sending the next event of
        this type, once: a network failure at that point of the protocol."""
        self.silent_next = 0
        """The next that many responses (of any kind) never say anything: ``response.created``
        comes, then nothing until ``response.cancel`` (or the end of the connection): a
        service whose socket is alive and whose model hangs. The script is not used up."""
        self.app.router.add_get("/v1/realtime", self._realtime)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def websocket_base_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1"

    async def send_error(self, message: str, *, kind: str = "server_error") -> None:
        """Send an ``error`` event on every live connection."""
        for session in list(self._live):
            assert isinstance(session, _Session)
            await session.error(kind, None, message)

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            body = {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "param": None,
                }
            }
            return web.json_response(body, status=401)
        if self.reject > 0:
            self.reject -= 1
            return web.json_response(
                {"error": {"message": "unavailable", "type": "server_error"}},
                status=self.reject_status,
            )
        if "model" not in request.query:
            return web.json_response(
                {"error": {"message": "model is required", "type": "invalid_request_error"}},
                status=400,
            )
        conn = RealtimeConnection(dict(request.query), dict(request.headers))
        return await self.serve(request, conn, lambda ws: _Session(self, ws, conn, request))


class _Session(WebSocketSession):
    """The server side of one connection."""

    def __init__(
        self,
        fake: FakeOpenAIRealtime,
        ws: web.WebSocketResponse,
        conn: RealtimeConnection,
        request: web.Request,
    ) -> None:
        super().__init__(ws, request)
        self.fake, self.conn = fake, conn
        model = request.query["model"]
        conn.session = {
            "id": _id("sess"),
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        }
        self.response: asyncio.Task[None] | None = None
        self.response_id: str | None = None
        self.buffer_ms = 0.0  # audio written to the input buffer this session
        self.detector = fake.vad()
        self.user_item: str | None = None
        self.carry = b""
        self.cancel_reason = "client_cancelled"

    async def send(self, event: dict[str, Any]) -> None:
        if self.fake.drop_before is not None and event.get("type") == self.fake.drop_before:
            self.fake.drop_before = None
            self.abort()
        await self.send_json({"event_id": _id("event"), **event})

    async def error(self, kind: str, code: str | None, message: str, event_id: str = "") -> None:
        await self.send(
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": event_id or None,
                },
            }
        )

    def find(self, item_id: str) -> _Item | None:
        return next((i for i in self.conn.items if i.id == item_id), None)

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.conn.session})
        try:
            async for msg in self.ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    await self.error("invalid_request_error", "invalid_json", "not JSON")
                    continue
                await self.handle(event)
        finally:
            if self.response is not None:
                self.response.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.response

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        eid = str(event.get("event_id") or "")
        if kind != "input_audio_buffer.append":
            self.conn.received.append(event)
        if kind == "session.update":
            session = event.get("session") or {}
            _merge(self.conn.session, session)
            await self.send({"type": "session.updated", "session": self.conn.session})
        elif kind == "input_audio_buffer.append":
            try:
                data = base64.b64decode(event["audio"], validate=True)
            except (KeyError, ValueError):
                await self.error("invalid_request_error", "invalid_value", "audio", eid)
                return
            self.conn.audio_bytes += len(data)
            await self.vad(data)
        elif kind == "input_audio_buffer.commit":
            await self.commit()
        elif kind == "input_audio_buffer.clear":
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "response.create":
            await self.create_response(event.get("response") or {}, eid)
        elif kind == "response.cancel":
            self.conn.cancels += 1
            if not await self.cancel_response():
                await self.error(
                    "invalid_request_error",
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found.",
                    eid,
                )
        elif kind == "conversation.item.create":
            await self.create_item(event.get("item") or {}, eid)
        elif kind == "conversation.item.truncate":
            await self.truncate(event, eid)
        elif kind == "conversation.item.delete":
            item = self.find(str(event.get("item_id")))
            if item is not None:
                self.conn.items.remove(item)
            await self.send({"type": "conversation.item.deleted", "item_id": event.get("item_id")})
        else:
            await self.error(
                "invalid_request_error", "unknown_event", f"Invalid event type: {kind!r}", eid
            )

    # -- input: the VAD

    async def vad(self, data: bytes) -> None:
        fmt = self.conn.input_format
        frame_bytes = int(20 * _bytes_per_ms(fmt))
        data = self.carry + data
        whole = len(data) - len(data) % frame_bytes
        self.carry = data[whole:]
        detection = self.conn.session["audio"]["input"].get("turn_detection")
        for i in range(0, whole, frame_bytes):
            self.buffer_ms += 20.0
            if detection is None:
                continue
            pcm = _decode(data[i : i + frame_bytes], fmt)
            change = self.detector.push(pcm, float(detection.get("silence_duration_ms", 500)))
            if change == "start":
                await self.speech_started(detection)
            elif change == "stop":
                await self.speech_stopped(detection)

    async def speech_started(self, detection: dict[str, Any]) -> None:
        self.user_item = _id("item")
        start = max(0.0, self.buffer_ms - 20.0 * self.fake.start_frames)
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(start),
                "item_id": self.user_item,
            }
        )
        if detection.get("interrupt_response", True) and self.response is not None:
            await self.cancel_response(reason="turn_detected")

    async def speech_stopped(self, detection: dict[str, Any]) -> None:
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": int(self.buffer_ms),
                "item_id": self.user_item,
            }
        )
        await self.commit()
        if detection.get("create_response", True):
            await self.create_response({}, "")

    async def commit(self) -> None:
        item_id = self.user_item or _id("item")
        self.user_item = None
        previous = self.conn.items[-1].id if self.conn.items else None
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        item = _Item(item_id, "message", "user")
        self.conn.items.append(item)
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": previous, "item": item.wire()}
        )
        await self.send({"type": "conversation.item.done", "item": item.wire()})
        if self.conn.session["audio"]["input"].get("transcription"):
            text = self.fake.next_transcript()
            item.text = text
            if text:
                await self.send(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id,
                        "content_index": 0,
                        "delta": text,
                    }
                )
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": 1.0},
                }
            )

    # -- conversation items

    async def create_item(self, item: dict[str, Any], eid: str) -> None:
        kind = item.get("type")
        item_id = str(item.get("id") or _id("item"))
        if self.find(item_id) is not None:
            await self.error("invalid_request_error", "duplicate_item_id", item_id, eid)
            return
        if kind == "message":
            role = item.get("role")
            content = item.get("content") or []
            allowed = {
                "user": {"input_text", "input_audio"},
                "system": {"input_text"},
                "assistant": {"output_text", "output_audio"},
            }.get(str(role), set())
            parts = [c for c in content if isinstance(c, dict)]
            if not parts or any(c.get("type") not in allowed for c in parts):
                await self.error(
                    "invalid_request_error",
                    "invalid_value",
                    f"Invalid content for a {role} message",
                    eid,
                )
                return
            text = " ".join(str(c.get("text") or c.get("transcript") or "") for c in parts)
            new = _Item(item_id, "message", str(role), text)
        elif kind == "function_call":
            new = _Item(
                item_id,
                "function_call",
                call_id=item.get("call_id"),
                name=item.get("name"),
                arguments=item.get("arguments"),
            )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not any(i.type == "function_call" and i.call_id == call_id for i in self.conn.items):
                await self.error(
                    "invalid_request_error",
                    "invalid_value",
                    f"No tool call found for function call output with call_id {call_id}.",
                    eid,
                )
                return
            new = _Item(item_id, "function_call_output", call_id=call_id, output=item.get("output"))
        else:
            await self.error("invalid_request_error", "invalid_value", f"item type {kind}", eid)
            return
        previous = self.conn.items[-1].id if self.conn.items else None
        self.conn.items.append(new)
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": previous, "item": new.wire()}
        )
        await self.send({"type": "conversation.item.done", "item": new.wire()})

    async def truncate(self, event: dict[str, Any], eid: str) -> None:
        item = self.find(str(event.get("item_id")))
        end = event.get("audio_end_ms")
        if item is None or item.role != "assistant":
            await self.error(
                "invalid_request_error",
                "invalid_value",
                "Only assistant messages can be truncated",
                eid,
            )
            return
        if not isinstance(end, int) or end < 0 or end > item.audio_ms + 1e-6:
            await self.error(
                "invalid_request_error",
                "invalid_value",
                f"Audio content of {int(item.audio_ms)}ms is already shorter than {end}ms",
                eid,
            )
            return
        self.conn.truncations.append(
            {"item_id": item.id, "audio_end_ms": end, "content_index": event.get("content_index")}
        )
        item.truncated_ms = end
        # The service drops the transcript of a truncated item ("no text the user has not
        # heard"); the fake keeps the words that fit in the heard audio, for assertions.
        words = item.text.split()
        keep = int(end // self.fake.ms_per_word) if self.fake.ms_per_word else len(words)
        item.text = " ".join(words[:keep])
        item.audio_ms = float(end)
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": event.get("content_index", 0),
                "audio_end_ms": end,
            }
        )

    # -- responses

    async def create_response(self, params: dict[str, Any], eid: str) -> None:
        if self.response is not None:
            await self.error(
                "invalid_request_error",
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress.",
                eid,
            )
            return
        instructions = params.get("instructions")
        reply: RealtimeReply | None
        if self.fake.silent_next > 0:
            self.fake.silent_next -= 1
            reply = None
        elif self.fake.fail_next is not None:
            reply = RealtimeReply(error=self.fake.fail_next)
            self.fake.fail_next = None
        elif instructions:
            lines = [line for line in str(instructions).splitlines() if line.strip()]
            reply = RealtimeReply(text=lines[-1].strip() if lines else "")
        else:
            reply = self.fake.next_reply()
        self.response_id = _id("resp")
        metadata = params.get("metadata")
        self.response = asyncio.create_task(self.respond(self.response_id, reply, metadata))

    async def cancel_response(self, reason: str = "client_cancelled") -> bool:
        task = self.response
        if task is None:
            return False
        self.cancel_reason = reason
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    async def respond(
        self, rid: str, reply: RealtimeReply | None, metadata: dict[str, Any] | None
    ) -> None:
        """Send the response to its end (``reply`` None: a silent one, see ``silent_next``)."""
        response: dict[str, Any] = {
            "id": rid,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
            "metadata": metadata,
            "output_modalities": ["audio"],
        }
        outputs: list[_Item] = []
        audio_item: _Item | None = None
        spoken: list[str] = []
        status, details = "completed", None
        try:
            await self.send({"type": "response.created", "response": response})
            if reply is None:
                await asyncio.Event().wait()  # (until cancelled)
                return
            if reply.error is not None:
                status = "failed"
                details = {
                    "type": "failed",
                    "error": {"type": "server_error", "code": None, "message": reply.error},
                }
                return
            if reply.text:
                audio_item = _Item(_id("item"), "message", "assistant")
                outputs.append(audio_item)
                await self.add_output(rid, audio_item, len(outputs) - 1)
                await self.speak(rid, audio_item, reply.text, spoken)
            for name, args in reply.tool_calls:
                arguments = args if isinstance(args, str) else json.dumps(dict(args))
                call = _Item(_id("item"), "function_call", call_id=_id("call"), name=name)
                outputs.append(call)
                await self.add_output(rid, call, len(outputs) - 1)
                base = {"response_id": rid, "item_id": call.id, "output_index": len(outputs) - 1}
                for j in range(0, len(arguments), 7):
                    await self.send(
                        {
                            "type": "response.function_call_arguments.delta",
                            **base,
                            "call_id": call.call_id,
                            "delta": arguments[j : j + 7],
                        }
                    )
                call.arguments = arguments
                await self.send(
                    {
                        "type": "response.function_call_arguments.done",
                        **base,
                        "call_id": call.call_id,
                        "name": name,
                        "arguments": arguments,
                    }
                )
                await self.send(
                    {
                        "type": "response.output_item.done",
                        "response_id": rid,
                        "output_index": len(outputs) - 1,
                        "item": call.wire(),
                    }
                )
                await self.send({"type": "conversation.item.done", "item": call.wire()})
        except asyncio.CancelledError:
            status = "cancelled"
            details = {"type": "cancelled", "reason": self.cancel_reason}
            if audio_item is not None:
                audio_item.text = " ".join(spoken)
                base = {
                    "response_id": rid,
                    "item_id": audio_item.id,
                    "output_index": 0,
                    "content_index": 0,
                }
                await self.send({"type": "response.output_audio.done", **base})
                await self.send(
                    {
                        "type": "response.output_audio_transcript.done",
                        **base,
                        "transcript": audio_item.text,
                    }
                )
        finally:
            self.response = None
            self.response_id = None
            response.update(
                status=status,
                status_details=details,
                output=[i.wire("incomplete" if status != "completed" else "completed")
                        for i in outputs],
            )  # fmt: skip
            await asyncio.shield(self.send({"type": "response.done", "response": response}))

    async def add_output(self, rid: str, item: _Item, index: int) -> None:
        previous = self.conn.items[-1].id if self.conn.items else None
        self.conn.items.append(item)
        wire = item.wire("in_progress")
        await self.send(
            {"type": "response.output_item.added", "response_id": rid, "output_index": index,
             "item": wire}
        )  # fmt: skip
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": previous, "item": wire}
        )

    async def speak(self, rid: str, item: _Item, text: str, spoken: list[str]) -> None:
        fmt = self.conn.output_format
        base = {"response_id": rid, "item_id": item.id, "output_index": 0, "content_index": 0}
        await self.send(
            {
                "type": "response.content_part.added",
                **base,
                "part": {"type": "audio", "transcript": ""},
            }
        )
        words = text.split()
        per_chunk = max(1, int(self.fake.chunk_ms))
        for n, word in enumerate(words):
            await self.send(
                {
                    "type": "response.output_audio_transcript.delta",
                    **base,
                    "delta": word if n == 0 else " " + word,
                }
            )
            left = self.fake.ms_per_word
            while left > 0:
                ms = min(per_chunk, left)
                audio = _tone(ms, fmt)
                await self.send(
                    {
                        "type": "response.output_audio.delta",
                        **base,
                        "delta": base64.b64encode(audio).decode(),
                    }
                )
                item.audio_ms += len(audio) / _bytes_per_ms(fmt)
                left -= ms
                if self.fake.chunk_delay:
                    await asyncio.sleep(self.fake.chunk_delay)
            spoken.append(word)
        item.text = text
        await self.send({"type": "response.output_audio.done", **base})
        await self.send(
            {"type": "response.output_audio_transcript.done", **base, "transcript": text}
        )
        await self.send(
            {
                "type": "response.content_part.done",
                **base,
                "part": {"type": "audio", "transcript": text},
            }
        )
        await self.send(
            {"type": "response.output_item.done", "response_id": rid, "output_index": 0,
             "item": item.wire()}
        )  # fmt: skip
        await self.send({"type": "conversation.item.done", "item": item.wire()})


def _merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    """``session.update`` semantics: only the fields present change (nested objects too)."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
