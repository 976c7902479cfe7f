"""Scripted STT / LLM / TTS / VAD doubles for pipeline tests (not shipped with voxtra)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import anyio

from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.io import Clock
from voxtra.pipeline.turn import frame_energy_db
from voxtra.providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec, Transcript


class EnergyVAD:
    """Speech = loud frame. Enough for tone-driven tests."""

    name = "energy-vad"

    def __init__(self, threshold_db: float = -35.0, fail: bool = False) -> None:
        self.threshold_db = threshold_db
        self.fail = fail
        self.sessions = 0

    def session(self) -> EnergyVAD:
        self.sessions += 1
        return self

    def is_speech(self, chunk: AudioChunk) -> bool:
        if self.fail:
            raise RuntimeError("vad exploded")
        return frame_energy_db(chunk) >= self.threshold_db


class ScriptedSTTStream:
    def __init__(self, owner: ScriptedSTT) -> None:
        self.owner = owner
        self.frames = 0
        self.closed = False
        self._send, self._recv = anyio.create_memory_object_stream[Transcript](100)

    async def send(self, chunk: AudioChunk) -> None:
        if self.owner.fail_send_after is not None and self.frames >= self.owner.fail_send_after:
            self.owner.fail_send_after = None
            raise ConnectionError("stt socket dropped")
        self.frames += 1

    async def end_of_speech(self) -> None:
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
            async for t in self._recv:
                yield t


class ScriptedSTT:
    """Each end_of_speech yields a partial then the next scripted final."""

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

    async def stream(self) -> ScriptedSTTStream:
        s = ScriptedSTTStream(self)
        self.streams.append(s)
        return s


@dataclass
class LLMCall:
    messages: list[ChatMessage]
    tools: list[ToolSpec]
    started: float
    finished: float | None = None
    closed_early: bool = False


@dataclass
class Reply:
    """A scripted answer: text pieces streamed with a delay, then optional tool calls."""

    pieces: list[str] = field(default_factory=list)
    tool_calls: tuple[ToolCall, ...] = ()
    fail_after: int | None = None


class ScriptedLLM:
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
    """Stream a text word by word, as LLMs do."""
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


class ScriptedTTS:
    """PCM16 8 kHz tone, ``ms_per_char`` long per character, in 100 ms chunks."""

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
