"""The voice pipeline: VAD, turn taking, streaming STT -> LLM -> TTS, barge-in, agent."""

from voxtra.pipeline.agent import Agent, AgentStream, Speak, Tool, ToolCallError, tool_spec
from voxtra.pipeline.chunker import SentenceChunker
from voxtra.pipeline.engine import ConversationEngine
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SayResult,
    SilenceTimeoutEvent,
    SpeechEndedEvent,
    SpeechStartedEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from voxtra.pipeline.io import Clock, ConvertingMediaIO, MediaIO, MonotonicClock
from voxtra.pipeline.pipeline import (
    DEFAULT_FALLBACK,
    EndReason,
    ProviderTimeout,
    VoicePipeline,
)
from voxtra.pipeline.turn import TurnDetector, frame_energy_db

__all__ = [
    "DEFAULT_FALLBACK",
    "Agent",
    "AgentResponseEvent",
    "AgentStream",
    "BargeInEvent",
    "Clock",
    "ConversationEngine",
    "ConvertingMediaIO",
    "EndReason",
    "MediaIO",
    "MonotonicClock",
    "PipelineEvent",
    "ProviderErrorEvent",
    "ProviderTimeout",
    "SayResult",
    "SentenceChunker",
    "SilenceTimeoutEvent",
    "Speak",
    "SpeechEndedEvent",
    "SpeechStartedEvent",
    "Tool",
    "ToolCallError",
    "TurnDetector",
    "TurnMetrics",
    "UserTranscriptEvent",
    "VoicePipeline",
    "frame_energy_db",
    "tool_spec",
]
