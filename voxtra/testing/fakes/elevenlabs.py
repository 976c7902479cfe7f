"""FakeElevenLabs: ElevenLabs' streaming text-to-speech endpoint on loopback.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000`` with header
``xi-api-key`` and a JSON body (``text``, ``model_id``, ...) answers with a chunked body
of raw audio in the requested format, as the real service does for its ``ulaw_8000``,
``alaw_8000`` and ``pcm_<rate>`` formats (MP3/Opus are not faked). The audio is a
tone whose length follows the text (``ms_per_char``), or whatever ``synthesize`` returns
(PCM16 at the requested rate) when a test wants real speech in it. Failures: a wrong
key (401), ``status`` (any HTTP error with ElevenLabs' ``detail`` body), an unknown
voice (404), or ``drop_after`` chunks before the connection is cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.testing.fakes._server import FakeServer

__all__ = ["FakeElevenLabs"]

logger = logging.getLogger(__name__)


def parse_output_format(fmt: str) -> tuple[Codec, int] | None:
    """(codec, rate) of an ElevenLabs raw output format name, or None if not raw."""
    kind, _, rate = fmt.partition("_")
    if not rate.isdigit():
        return None
    codec = {"ulaw": Codec.ULAW, "alaw": Codec.ALAW, "pcm": Codec.PCM16}.get(kind)
    if codec is None or (codec is not Codec.PCM16 and rate != "8000"):
        return None
    return codec, int(rate)


def _tone(text: str, rate: int, ms_per_char: float) -> bytes:
    seconds = max(0.1, len(text) * ms_per_char / 1000)
    t = np.arange(int(seconds * rate)) / rate
    wave = 8000 * np.sin(2 * np.pi * 440 * t)
    return wave.astype("<i2").tobytes()


class FakeElevenLabs(FakeServer):
    """Fake ElevenLabs TTS streaming. ``requests`` records each request's voice, query
    and JSON body for assertions."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        voices: tuple[str, ...] | None = None,
        status: int | None = None,
        drop_after: int | None = None,
        chunk_ms: int = 100,
        chunk_delay: float = 0.0,
        ms_per_char: float = 60.0,
        synthesize: Callable[[str, int], bytes] | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.voices = voices
        self.status = status
        self.drop_after = drop_after
        self.chunk_ms = chunk_ms
        self.chunk_delay = chunk_delay
        self.ms_per_char = ms_per_char
        self.synthesize = synthesize
        self.requests: list[dict[str, Any]] = []
        self.app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._stream)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("xi-api-key") != self.api_key:
            return _error(401, "invalid_api_key", "Invalid API key")
        voice = request.match_info["voice_id"]
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_json", "Body is not JSON")
        fmt = request.query.get("output_format", "mp3_44100_128")
        self.requests.append({"voice_id": voice, "query": dict(request.query), "body": body})
        if self.status is not None:
            return _error(self.status, "fake_error", f"Scripted failure {self.status}")
        if self.voices is not None and voice not in self.voices:
            return _error(404, "voice_not_found", f"A voice with voice_id {voice} was not found.")
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return _error(422, "invalid_text", "text is required")
        parsed = parse_output_format(fmt)
        if parsed is None:
            return _error(422, "unsupported_format", f"fake serves raw formats only, not {fmt}")
        codec, rate = parsed
        pcm = (
            self.synthesize(text, rate) if self.synthesize else _tone(text, rate, self.ms_per_char)
        )
        audio = g711.encode(AudioChunk(pcm, rate, Codec.PCM16), codec).data
        step = AudioChunk.frame_bytes(codec, rate, self.chunk_ms)
        resp = web.StreamResponse(
            headers={"Content-Type": "audio/basic" if codec is not Codec.PCM16 else "audio/pcm"}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for n, i in enumerate(range(0, len(audio), step)):
            if self.drop_after is not None and n >= self.drop_after:
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write(audio[i : i + step])
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await resp.write_eof()
        return resp


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)
