"""Scripted speech providers: test a voice agent's dialogue without audio or a network.

Each double implements the provider protocol of :mod:`voxtra.providers.base` and plays
a script, on a :class:`~voxtra.pipeline.io.Clock` (use
:class:`voxtra.pipeline.testing.VirtualClock` for tests that take no wall time):

- :class:`EnergyVAD`: speech is any frame louder than a threshold (a tone is speech,
  silence is not);
- :class:`ScriptedSTT`: at each end of speech, a partial then the next scripted final
  transcript;
- :class:`ScriptedLLM`: each request streams the next scripted :class:`Reply`, piece by
  piece, and records what it was asked (:attr:`ScriptedLLM.calls`);
- :class:`ScriptedTTS`: a quiet tone as long as the text, and the texts asked for
  (:attr:`ScriptedTTS.requests`).

Failures are scriptable too (``fail_send_after``, ``Reply.fail_after``, ``fail_on``,
``EnergyVAD(fail=True)``); they raise what a real provider's library would raise
(``ConnectionError``, ``RuntimeError``), so the pipeline's handling of them is tested.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import anyio

from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.io import Clock
from voxtra.pipeline.turn import frame_energy_db
from voxtra.providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec, Transcript

__all__ = [
    "EnergyVAD",
    "LLMCall",
    "Reply",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedSTTStream",
    "ScriptedTTS",
    "words",
]


class EnergyVAD:
    """Speech = a frame at or above ``threshold_db`` (dBFS). Enough for tone-driven tests.

    ``fail=True``: every frame raises ``RuntimeError`` (a broken VAD library).
    """

    name = "energy-vad"

    def __init__(self, threshold_db: float = -35.0, fail: bool = False) -> None:
        self.threshold_db = threshold_db
        self.fail = fail
        self.sessions = 0
        """How many per-call sessions were opened."""

    def session(self) -> EnergyVAD:
        self.sessions += 1
        return self

    def is_speech(self, chunk: AudioChunk) -> bool:
        if self.fail:
            raise RuntimeError("vad exploded")
        return frame_energy_db(chunk) >= self.threshold_db


class ScriptedSTTStream:
    """One recognition stream of a :class:`ScriptedSTT`."""

    def __init__(self, owner: ScriptedSTT) -> None:
        self.owner = owner
        self.frames = 0
        """Audio frames received."""
        self.closed = False
        self._send, self._recv = anyio.create_memory_object_stream[Transcript](100)

    async def send(self, chunk: AudioChunk) -> None:
        if self.owner.fail_send_after is not None and self.frames >= self.owner.fail_send_after:
            self.owner.fail_send_after = None
            raise ConnectionError("stt socket dropped")
        self.frames += 1

    async def end_of_speech(self) -> None:
        """Emit the first word as a partial, then (after ``delay``) the next final."""
        if not self.owner.finals:
            await self._send.send(Transcript("", is_final=True))
            return
        text = self.owner.finals.pop(0)
        await self._send.send(Transcript(text.split()[0], is_final=False))
        if self.owner.delay:
            await self.owner.clock.sleep(self.owner.delay)
        await self._send.send(Transcript(text, is_final=True, confidence=0.9, start=0.0, end=1.0))

    async def close(self) -> None:
        self.closed = True
        self._send.close()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async with self._recv:
            async for transcript in self._recv:
                yield transcript


class ScriptedSTT:
    """Each end of speech yields a partial then the next of ``finals`` (then "").

    ``delay``: clock seconds between the partial and the final.
    ``fail_send_after``: the stream's ``send`` raises ``ConnectionError`` once after
    that many frames (a dropped socket).
    """

    name = "scripted-stt"

    def __init__(
        self,
        finals: Sequence[str],
        clock: Clock,
        *,
        delay: float = 0.1,
        fail_send_after: int | None = None,
    ) -> None:
        self.finals = list(finals)
        self.clock = clock
        self.delay = delay
        self.fail_send_after = fail_send_after
        self.streams: list[ScriptedSTTStream] = []
        """Every stream opened, in order."""

    async def stream(self) -> ScriptedSTTStream:
        s = ScriptedSTTStream(self)
        self.streams.append(s)
        return s


@dataclass
class LLMCall:
    """One request to a :class:`ScriptedLLM`: what it was given, and when."""

    messages: list[ChatMessage]
    tools: list[ToolSpec]
    started: float
    finished: float | None = None
    closed_early: bool = False
    """True when the consumer stopped reading before the reply ended (barge-in)."""


@dataclass
class Reply:
    """A scripted answer: text pieces streamed with a delay, then optional tool calls.

    ``fail_after``: raise ``ConnectionError`` after that many pieces.
    """

    pieces: list[str] = field(default_factory=list)
    tool_calls: tuple[ToolCall, ...] = ()
    fail_after: int | None = None


class ScriptedLLM:
    """Answers each request with the next :class:`Reply` (a stock sentence when none is
    left), ``delay`` clock seconds per piece; records requests in :attr:`calls`."""

    name = "scripted-llm"

    def __init__(self, replies: Sequence[Reply], clock: Clock, *, delay: float = 0.05) -> None:
        self.replies = list(replies)
        self.clock = clock
        self.delay = delay
        self.calls: list[LLMCall] = []

    async def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        call = LLMCall(
            [ChatMessage(m.role, m.content, list(m.tool_calls), m.tool_call_id) for m in messages],
            list(tools),
            self.clock.now(),
        )
        self.calls.append(call)
        reply = self.replies.pop(0) if self.replies else Reply(["I have nothing more to say."])
        done = False
        try:
            for i, piece in enumerate(reply.pieces):
                if reply.fail_after is not None and i >= reply.fail_after:
                    raise ConnectionError("llm stream broke")
                await self.clock.sleep(self.delay)
                yield LLMChunk(text=piece)
            if reply.fail_after is not None and reply.fail_after >= len(reply.pieces):
                raise ConnectionError("llm stream broke")
            if reply.tool_calls:
                yield LLMChunk(tool_calls=reply.tool_calls)
            done = True
        finally:
            call.finished = self.clock.now()
            call.closed_early = not done


def words(text: str) -> list[str]:
    """Split a text into word pieces (with their trailing space), as LLMs stream it."""
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


class ScriptedTTS:
    """PCM16 8 kHz tone, ``ms_per_char`` long per character, in 100 ms chunks.

    ``first_byte``: clock seconds before the first chunk. ``fail_on``: a text containing
    it raises ``ConnectionError``. :attr:`requests` keeps (clock time, text) of each.
    """

    name = "scripted-tts"
    sample_rate = 8000

    def __init__(
        self,
        clock: Clock,
        *,
        ms_per_char: float = 50.0,
        first_byte: float = 0.04,
        fail_on: str | None = None,
    ) -> None:
        self.clock = clock
        self.ms_per_char = ms_per_char
        self.first_byte = first_byte
        self.fail_on = fail_on
        self.requests: list[tuple[float, str]] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.requests.append((self.clock.now(), text))
        if self.fail_on is not None and self.fail_on in text:
            raise ConnectionError("tts service unavailable")
        await self.clock.sleep(self.first_byte)
        total = int(len(text) * self.ms_per_char) // 20 * 20
        sent = 0
        while sent < total:
            ms = min(100, total - sent)
            yield AudioChunk(b"\x10\x00" * (8 * ms), 8000, Codec.PCM16)
            sent += ms
