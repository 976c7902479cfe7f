"""FakeDeepgram: Deepgram's live transcription WebSocket (``/v1/listen``) on loopback.

It speaks the real wire protocol, so ``deepgram-sdk`` (or any client) runs unchanged
against it: query parameters as Deepgram takes them, ``Authorization: Token <key>``,
binary audio frames in, JSON control messages (``KeepAlive``, ``Finalize``,
``CloseStream``) in, and ``Metadata``, ``SpeechStarted``, ``Results`` and
``UtteranceEnd`` messages out. What is "recognised" is scripted by the test: each
``DeepgramTurn`` fires once that much audio (bytes since the stream began) has arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from voxtra.testing.fakes._server import FakeServer

__all__ = ["DeepgramSession", "DeepgramTurn", "FakeDeepgram"]

logger = logging.getLogger(__name__)

_BYTES_PER_SAMPLE = {"mulaw": 1, "alaw": 1, "linear16": 2}


@dataclass(frozen=True)
class DeepgramTurn:
    """After ``after_bytes`` of audio: interim results for each of ``interims``, then a
    final result with ``transcript`` (``speech_final`` true), then ``UtteranceEnd``."""

    after_bytes: int
    transcript: str
    interims: Sequence[str] = ()
    confidence: float = 0.98


@dataclass
class DeepgramSession:
    """What one connection sent: for the test's assertions."""

    query: dict[str, str]
    headers: dict[str, str]
    audio_bytes: int = 0
    controls: list[dict[str, Any]] = field(default_factory=list)
    closed_by_client: bool = False
    ended: bool = False
    """The connection is over (closed by either side, or cut)."""


class FakeDeepgram(FakeServer):
    """Fake Deepgram live STT. ``drop_after_bytes`` aborts the socket (no close frame)
    once that much audio arrived, to test a provider dying mid-stream.
    ``hang_after_bytes``: once that much audio arrived the service goes quiet, a hung
    Deepgram: it reads on (a client's close frame still ends the connection) but sends
    nothing, no results and no answer to ``Finalize`` or ``CloseStream``."""

    def __init__(
        self,
        api_key: str = "test-key",
        turns: Sequence[DeepgramTurn] = (),
        *,
        drop_after_bytes: int | None = None,
        hang_after_bytes: int | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.turns = list(turns)
        self.drop_after_bytes = drop_after_bytes
        self.hang_after_bytes = hang_after_bytes
        self.sessions: list[DeepgramSession] = []
        self.app.router.add_get("/v1/listen", self._listen)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth not in (f"Token {self.api_key}", f"Bearer {self.api_key}"):
            return web.json_response(
                {
                    "err_code": "INVALID_AUTH",
                    "err_msg": "Invalid credentials.",
                    "request_id": str(uuid.uuid4()),
                },
                status=401,
            )
        if "model" not in request.query:
            return web.json_response({"err_code": "Bad Request", "err_msg": "model"}, status=400)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = DeepgramSession(dict(request.query), dict(request.headers))
        self.sessions.append(session)
        try:
            await _Stream(self, ws, session, request).run()
        finally:
            session.ended = True
        return ws


class _Stream:
    """The server side of one connection."""

    def __init__(
        self,
        fake: FakeDeepgram,
        ws: web.WebSocketResponse,
        s: DeepgramSession,
        request: web.Request,
    ) -> None:
        self.fake, self.ws, self.s, self.request = fake, ws, s, request
        self.request_id = str(uuid.uuid4())
        q = s.query
        self.rate = int(q.get("sample_rate", "16000"))
        self.width = _BYTES_PER_SAMPLE.get(q.get("encoding", "linear16"), 2)
        self.vad_events = q.get("vad_events") == "true"
        self.interim = q.get("interim_results") == "true"
        self.utterance_end = "utterance_end_ms" in q
        self.pending = list(fake.turns)
        self.cursor = 0.0  # seconds already covered by results

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.width / self.rate

    async def run(self) -> None:
        async for msg in self.ws:
            hang = self.fake.hang_after_bytes
            if hang is not None and self.s.audio_bytes >= hang:
                if msg.type is WSMsgType.BINARY:
                    self.s.audio_bytes += len(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    self.s.controls.append(json.loads(msg.data))
                continue  # hung: reads on, answers nothing
            if msg.type is WSMsgType.BINARY:
                self.s.audio_bytes += len(msg.data)
                drop = self.fake.drop_after_bytes
                if drop is not None and self.s.audio_bytes >= drop:
                    transport = self.request.transport
                    if transport is not None:
                        transport.abort()
                    return
                while self.pending and self.s.audio_bytes >= self.pending[0].after_bytes:
                    await self._turn(self.pending.pop(0), from_finalize=False)
            elif msg.type is WSMsgType.TEXT:
                try:
                    control = json.loads(msg.data)
                except ValueError:
                    await self._error("INVALID_JSON", "control message is not JSON")
                    continue
                self.s.controls.append(control)
                kind = control.get("type")
                if kind == "Finalize":
                    await self._finalize()
                elif kind == "CloseStream":
                    self.s.closed_by_client = True
                    await self._send(self._metadata())
                    await self.ws.close()
                    return
                elif kind != "KeepAlive":
                    await self._error("UNKNOWN_MESSAGE", f"unknown control {kind!r}")
            else:
                break

    async def _finalize(self) -> None:
        """Flush: a pending turn whose audio has partly arrived becomes final now."""
        if (
            self.pending
            and self.s.audio_bytes > 0
            and self.seconds(self.s.audio_bytes) > (self.cursor)
        ):
            await self._turn(self.pending.pop(0), from_finalize=True)
        else:
            await self._send(self._results("", True, False, 0.0, from_finalize=True))

    async def _turn(self, turn: DeepgramTurn, *, from_finalize: bool) -> None:
        end = self.seconds(self.s.audio_bytes)
        if self.vad_events:
            await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": self.cursor})
        if self.interim:
            for text in turn.interims:
                await self._send(self._results(text, False, False, turn.confidence * 0.8, end))
        await self._send(
            self._results(
                turn.transcript,
                True,
                not from_finalize,
                turn.confidence,
                end,
                from_finalize=from_finalize,
            )
        )
        start = self.cursor
        self.cursor = end
        if self.utterance_end and not from_finalize:
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end})
        logger.debug("fake deepgram: %r for %.2f-%.2f s", turn.transcript, start, end)

    def _results(
        self,
        text: str,
        is_final: bool,
        speech_final: bool,
        conf: float,
        end: float | None = None,
        *,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        start = self.cursor
        end = start if end is None else end
        words = text.split()
        step = (end - start) / len(words) if words else 0.0
        msg: dict[str, Any] = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": conf,
                        "words": [
                            {
                                "word": w.strip(".,?!").lower(),
                                "punctuated_word": w,
                                "start": round(start + i * step, 3),
                                "end": round(start + (i + 1) * step, 3),
                                "confidence": conf,
                            }
                            for i, w in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "general-nova-3", "version": "fake", "arch": "nova-3"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }
        if from_finalize:
            msg["from_finalize"] = True
        return msg

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "0" * 64,
            "created": datetime.now(UTC).isoformat(),
            "duration": round(self.seconds(self.s.audio_bytes), 3),
            "channels": 1,
            "models": ["00000000-0000-0000-0000-000000000000"],
            "model_info": {},
        }

    async def _error(self, code: str, description: str) -> None:
        await self._send({"type": "Error", "variant": code, "description": description})

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(message))
            await asyncio.sleep(0)
