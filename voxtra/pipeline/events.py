"""Typed events a voice pipeline emits, for logs, UIs, tests and metrics.

Every event carries ``at``: the pipeline clock's time (seconds, monotonic) when it
happened, so a trace of one call can be laid on a single timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxtra.providers.base import ToolCall

__all__ = [
    "AgentResponseEvent",
    "BargeInEvent",
    "PipelineEvent",
    "ProviderErrorEvent",
    "SayResult",
    "SilenceTimeoutEvent",
    "SpeechEndedEvent",
    "SpeechStartedEvent",
    "TurnMetrics",
    "UserTranscriptEvent",
]


@dataclass(frozen=True, slots=True)
class UserTranscriptEvent:
    """What the caller said. Partials have ``is_final=False``; ``listen()`` returns finals."""

    text: str
    confidence: float | None = None
    start: float | None = None
    """Seconds from the start of the STT stream, when the engine reports it."""
    end: float | None = None
    is_final: bool = True
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentResponseEvent:
    """One LLM answer: its full text (as generated) and the tools it asked for."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeechStartedEvent:
    """The caller started speaking (after the ``min_speech_ms`` onset guard)."""

    at: float = 0.0
    speech_ms: float = 0.0
    """Speech seen to confirm the onset (at least ``min_speech_ms``)."""


@dataclass(frozen=True, slots=True)
class SpeechEndedEvent:
    """The caller stopped speaking for ``end_silence_ms``: end of turn."""

    at: float = 0.0
    speech_ms: float = 0.0
    """How long the caller spoke (from the onset to the last speech frame)."""


@dataclass(frozen=True, slots=True)
class BargeInEvent:
    """The caller interrupted the agent; only ``heard_text`` stays in the history."""

    heard_text: str
    played_ms: float
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ProviderErrorEvent:
    """A provider failed or did not answer in time; the turn ended and the fallback
    text was spoken (see ``VoicePipeline``'s ``fallback_text`` / ``fallback_tts``)."""

    provider: str
    message: str
    at: float = 0.0
    stage: str = ""
    """Which provider role failed: ``"stt"``, ``"llm"``, ``"tts"`` or ``"vad"``."""
    timed_out: bool = False
    """The provider hung: it gave no answer within the stage's deadline
    (``stt_timeout``, ``llm_timeout``, ``tts_timeout``) rather than failing."""


@dataclass(frozen=True, slots=True)
class SilenceTimeoutEvent:
    """The caller said nothing for ``silence_timeout`` seconds."""

    seconds: float
    at: float = 0.0


@dataclass(slots=True)
class TurnMetrics:
    """Timestamps (pipeline clock, seconds) of one turn's stages; None if not reached.

    ``first_frame_out`` is when the first audio of the answer was handed to the
    transport, which plays it at its next 20 ms tick when nothing is queued before it.
    """

    speech_end: float | None = None
    stt_final: float | None = None
    llm_first_token: float | None = None
    tts_first_byte: float | None = None
    first_frame_out: float | None = None
    interrupted: bool = False
    at: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def _gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) * 1000.0

    @property
    def stt_ms(self) -> float | None:
        """End of speech detected -> final transcript."""
        return self._gap(self.speech_end, self.stt_final)

    @property
    def llm_ms(self) -> float | None:
        """Final transcript -> first LLM token."""
        return self._gap(self.stt_final, self.llm_first_token)

    @property
    def tts_ms(self) -> float | None:
        """First LLM token -> first TTS audio."""
        return self._gap(self.llm_first_token, self.tts_first_byte)

    @property
    def send_ms(self) -> float | None:
        """First TTS audio -> handed to the transport."""
        return self._gap(self.tts_first_byte, self.first_frame_out)

    @property
    def total_ms(self) -> float | None:
        """End of speech detected -> first answer frame out: the caller's wait."""
        return self._gap(self.speech_end, self.first_frame_out)

    def as_dict(self) -> dict[str, float | None]:
        return {
            "stt_ms": self.stt_ms,
            "llm_ms": self.llm_ms,
            "tts_ms": self.tts_ms,
            "send_ms": self.send_ms,
            "total_ms": self.total_ms,
        }


@dataclass(frozen=True, slots=True)
class SayResult:
    """How a ``say`` ended: fully played, or cut short by the caller."""

    interrupted: bool
    heard_text: str
    played_ms: float


PipelineEvent = (
    UserTranscriptEvent
    | AgentResponseEvent
    | SpeechStartedEvent
    | SpeechEndedEvent
    | BargeInEvent
    | ProviderErrorEvent
    | SilenceTimeoutEvent
    | TurnMetrics
)
