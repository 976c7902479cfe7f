"""The small protocols every speech and language provider implements.

A provider instance is a *factory*: the pipeline asks it for a fresh per-call stream
(``STT.stream()``, ``VAD.session()``), so no state is ever shared between calls. Cloud and
embedded engines implement the same protocols; third parties register theirs under the
``voxtra.providers`` entry-point group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from voxtra.media.frames import AudioChunk

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "VAD",
    "ChatMessage",
    "LLMChunk",
    "STTStream",
    "ToolCall",
    "ToolSpec",
    "Transcript",
    "VADSession",
]


@dataclass(frozen=True, slots=True)
class Transcript:
    """A piece of recognised speech. ``is_final`` transcripts end an utterance."""

    text: str
    is_final: bool
    confidence: float | None = None
    start: float | None = None
    """Seconds from the start of the stream, when the engine says."""
    end: float | None = None


@runtime_checkable
class STTStream(Protocol):
    """One call's recognition stream: push frames, read transcripts."""

    async def send(self, chunk: AudioChunk) -> None:
        """Feed audio (any rate/codec the provider accepts; it converts the rest)."""

    async def end_of_speech(self) -> None:
        """The VAD saw the caller stop: finalise the utterance now if the engine can.

        A final transcript should follow, with empty text if nothing was recognised:
        the pipeline takes no final within ``stt_timeout`` for a hung STT."""

    async def close(self) -> None:
        """Flush and release the stream; ``transcripts()`` then ends."""

    def transcripts(self) -> AsyncIterator[Transcript]:
        """Partial and final transcripts, in order, until closed."""


@runtime_checkable
class STT(Protocol):
    """A speech recogniser. It may also declare ``sample_rate`` (int): the rate it
    works at; the voice pipeline then converts every caller frame to PCM16 at that rate
    once, as it comes in, and VAD, turn detection and the stream all take that frame.
    And ``batch_ms`` (float): the pipeline then sends the caller's audio in pieces of
    that much, joined, instead of frame by frame (a cloud STT's message each: see
    ``VoicePipeline.stt_batch_ms``)."""

    name: str

    async def stream(self) -> STTStream:
        """Open a new recognition stream for one call."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the LLM may call: name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class ChatMessage:
    """One entry of a call's conversation history (OpenAI chat shape)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class LLMChunk:
    """A streamed piece of an answer: text, or (at the end) the tool calls asked for."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        """Stream the answer to ``messages``. Cancelling the iteration stops generation."""


@runtime_checkable
class TTS(Protocol):
    name: str
    sample_rate: int
    """Rate of the PCM16 (or 8 kHz G.711) chunks ``synthesize`` yields."""

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Stream audio for ``text`` as it is produced. Cancelling stops synthesis."""


@runtime_checkable
class VADSession(Protocol):
    """One call's voice activity detector (it keeps per-stream state)."""

    def is_speech(self, chunk: AudioChunk) -> bool:
        """Whether this 20 ms frame holds speech."""


@runtime_checkable
class VAD(Protocol):
    name: str

    def session(self) -> VADSession:
        """A fresh detector for one call."""
