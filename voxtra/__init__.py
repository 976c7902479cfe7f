"""Voxtra: voice applications and AI phone agents on Asterisk, through ARI."""

from voxtra.app import VoxtraApp
from voxtra.call import (
    CallBusy,
    CallDirection,
    CallFailed,
    CallNoAnswer,
    CallSession,
    CallState,
    OriginateError,
    Playback,
)
from voxtra.config import MediaSettings, VoxtraSettings
from voxtra.errors import (
    CallbackSignatureError,
    CallEnded,
    ConfigError,
    MediaError,
    PipelineNotConfigured,
    ProviderError,
    RecordingError,
    VoxtraError,
)
from voxtra.media.frames import AudioChunk, Codec
from voxtra.routing import CallInfo, Route
from voxtra.voice import VoiceConfig

__version__ = "0.1.0.dev0"

__all__ = [
    "AudioChunk",
    "CallBusy",
    "CallDirection",
    "CallEnded",
    "CallFailed",
    "CallInfo",
    "CallNoAnswer",
    "CallSession",
    "CallState",
    "CallbackSignatureError",
    "Codec",
    "ConfigError",
    "MediaError",
    "MediaSettings",
    "OriginateError",
    "PipelineNotConfigured",
    "Playback",
    "ProviderError",
    "RecordingError",
    "Route",
    "VoiceConfig",
    "VoxtraApp",
    "VoxtraError",
    "VoxtraSettings",
]
