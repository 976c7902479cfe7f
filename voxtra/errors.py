"""Every error Voxtra raises derives from VoxtraError, so users can catch one base.

Layer-specific errors (ARI, media, providers, recording) live next to their layer
and derive from the classes here.
"""

from __future__ import annotations

__all__ = [
    "CallEnded",
    "ConfigError",
    "MediaError",
    "ProviderError",
    "RecordingError",
    "VoxtraError",
]


class VoxtraError(Exception):
    """Base of every error raised by Voxtra."""


class ConfigError(VoxtraError, ValueError):
    """A setting is missing, unknown or of the wrong type; the message names it."""


class CallEnded(VoxtraError):
    """The call hung up while (or before) an operation on it was waiting."""

    def __init__(self, call_id: str, message: str | None = None) -> None:
        super().__init__(message or f"call {call_id} has ended")
        self.call_id = call_id


class MediaError(VoxtraError):
    """Audio could not be set up, parsed or moved."""


class ProviderError(VoxtraError):
    """An STT, LLM, TTS or VAD provider failed; ``provider`` names it."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class RecordingError(VoxtraError):
    """A recording failed, was rejected, or could not be fetched or delivered."""
