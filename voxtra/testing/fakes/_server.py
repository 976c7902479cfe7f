"""What the wire-protocol fakes share: a loopback aiohttp server base, and for the
speech-to-speech fakes (OpenAI Realtime, Gemini Live) the scripted model, the live
WebSocket sessions and the energy VAD that finds the caller's turns."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

import numpy as np
from aiohttp import web

from voxtra.testing import audio

__all__ = [
    "FakeServer",
    "RealtimeReply",
    "ServiceVAD",
    "SpeechServiceFake",
    "WebSocketSession",
    "tone_pcm16",
]

logger = logging.getLogger(__name__)


class FakeServer:
    """Starts an ``aiohttp.web`` app on 127.0.0.1 (a free port unless ``port`` is given;
    TLS with ``ssl_context``)."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self._port = port
        self._ssl = ssl_context
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        for addr in self._runner.addresses:
            return int(addr[1])
        raise RuntimeError(f"{type(self).__name__} has no listening socket")

    @property
    def url(self) -> str:
        """``http://host:port`` (``https`` with TLS) of the running server."""
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self._ssl)
        await self._site.start()
        logger.debug("%s listening on %s", type(self).__name__, self.url)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- the speech-to-speech fakes


@dataclass(frozen=True)
class RealtimeReply:
    """One scripted answer of a speech-to-speech fake: ``text`` spoken (audio and
    transcript), and/or function calls ``(name, arguments)`` after it; ``error`` makes
    the response fail with that message (OpenAI Realtime)."""

    text: str = ""
    tool_calls: Sequence[tuple[str, Mapping[str, Any] | str]] = ()
    error: str | None = None


def tone_pcm16(ms: float, rate: int) -> bytes:
    """``ms`` of the fakes' answer audio: a 440 Hz tone at about -21 dBFS, PCM16."""
    return audio.tone(440.0, ms / 1000.0, rate, amplitude=3000 / 32768).astype("<i2").tobytes()


class ServiceVAD:
    """The fakes' turn detection on 20 ms frames: speech starts after ``start_frames``
    frames at or above ``speech_db`` (dBFS) and stops after ``silence_ms`` below it."""

    def __init__(self, speech_db: float, start_frames: int) -> None:
        self.speech_db = speech_db
        self.start_frames = start_frames
        self.in_speech = False
        self._loud = 0
        self._silent_ms = 0.0

    def push(self, pcm: bytes, silence_ms: float) -> Literal["start", "stop"] | None:
        """One 20 ms frame of PCM16; ``"start"``/``"stop"`` when speech starts/stops."""
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
        rms = math.sqrt(float(np.dot(x, x)) / max(1, len(x)))
        if 20 * math.log10(max(rms, 1e-9) / 32768.0) >= self.speech_db:
            self._loud += 1
            self._silent_ms = 0.0
            if not self.in_speech and self._loud >= self.start_frames:
                self.in_speech = True
                return "start"
            return None
        self._loud = 0
        if self.in_speech:
            self._silent_ms += 20.0
            if self._silent_ms >= silence_ms:
                self.in_speech = False
                return "stop"
        return None


class WebSocketSession:
    """The server side of one client WebSocket: JSON out under a lock, ``abort()``."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws, self.request = ws, request
        self.send_lock = asyncio.Lock()
        self.aborted = False

    async def send_json(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            if not self.ws.closed and not self.aborted:
                await self.ws.send_str(json.dumps(message))

    def abort(self) -> None:
        """Cut the connection without a close frame (a network failure)."""
        self.aborted = True
        if self.request.transport is not None:
            self.request.transport.abort()

    async def run(self) -> None:
        raise NotImplementedError


class _Connection(Protocol):
    closed: bool


C = TypeVar("C", bound=_Connection)


class SpeechServiceFake(FakeServer, Generic[C]):
    """A scripted speech-to-speech service: each caller turn its energy VAD finds takes
    the next of ``transcripts``, each answer the next :class:`RealtimeReply` (a 440 Hz
    tone, ``ms_per_word`` per word, ``chunk_ms`` a message, one every ``chunk_delay``
    s); ``connections`` records what each client did."""

    def __init__(
        self,
        api_key: str,
        *,
        transcripts: Sequence[str] = (),
        replies: Sequence[RealtimeReply] = (),
        ms_per_word: float = 300.0,
        chunk_ms: float = 100.0,
        chunk_delay: float = 0.02,
        speech_db: float = -40.0,
        start_frames: int = 2,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(port=port, ssl_context=ssl_context)
        self.api_key = api_key
        self.transcripts = list(transcripts)
        self.replies = list(replies)
        self.ms_per_word = ms_per_word
        self.chunk_ms = chunk_ms
        self.chunk_delay = chunk_delay
        self.speech_db = speech_db
        self.start_frames = start_frames
        self.connections: list[C] = []
        self._live: list[WebSocketSession] = []

    def next_reply(self) -> RealtimeReply:
        return self.replies.pop(0) if self.replies else RealtimeReply(text="OK.")

    def next_transcript(self) -> str:
        return self.transcripts.pop(0) if self.transcripts else ""

    def vad(self) -> ServiceVAD:
        return ServiceVAD(self.speech_db, self.start_frames)

    def drop(self) -> None:
        """Cut every live connection without a close frame (a network failure)."""
        for session in list(self._live):
            session.abort()

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.connections) < n:
                await asyncio.sleep(0.01)

    async def serve(
        self,
        request: web.Request,
        conn: C,
        session: Callable[[web.WebSocketResponse], WebSocketSession],
    ) -> web.WebSocketResponse:
        """Accept the WebSocket and run ``session(ws)`` on it until it ends."""
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.connections.append(conn)
        live = session(ws)
        self._live.append(live)
        try:
            await live.run()
        finally:
            self._live.remove(live)
            conn.closed = True
        return ws
