"""Speech and language providers: protocols, the registry, and the built-in engines.

Concrete providers live in their own modules (``voxtra.providers.rules``,
``voxtra.providers.deepgram_stt``, ...) so that importing this package never imports an
optional SDK; ``get_provider(kind, name, **options)`` finds them by name.
"""

from voxtra.providers.base import (
    LLM,
    STT,
    TTS,
    VAD,
    ChatMessage,
    LLMChunk,
    STTStream,
    ToolCall,
    ToolSpec,
    Transcript,
    VADSession,
)
from voxtra.providers.registry import available_providers, get_provider

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
    "available_providers",
    "get_provider",
]
