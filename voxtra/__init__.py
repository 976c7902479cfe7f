"""Voxtra: voice applications and AI phone agents on Asterisk, through ARI."""

from voxtra.app import VoxtraApp
from voxtra.calls.playback import Playback
from voxtra.calls.session import CallSession
from voxtra.calls.state import CallDirection, CallEndReason, CallState
from voxtra.calls.voice import VoiceConfig
from voxtra.config import MediaSettings, VoxtraSettings
from voxtra.errors import (
    AppNotRunning,
    CallbackSignatureError,
    CallBusy,
    CallEnded,
    CallFailed,
    CallNoAnswer,
    ConfigError,
    InvalidTransferTarget,
    MediaError,
    NotSupported,
    OriginateError,
    PipelineNotConfigured,
    PlaybackFailed,
    ProviderError,
    RecordingError,
    VariableNotSet,
    VoxtraError,
)
from voxtra.media.frames import AudioChunk, Codec
from voxtra.routing import CallInfo, Route

__version__ = "0.1.0.dev0"

__all__ = [
    "AppNotRunning",
    "AudioChunk",
    "CallBusy",
    "CallDirection",
    "CallEndReason",
    "CallEnded",
    "CallFailed",
    "CallInfo",
    "CallNoAnswer",
    "CallSession",
    "CallState",
    "CallbackSignatureError",
    "Codec",
    "ConfigError",
    "InvalidTransferTarget",
    "MediaError",
    "MediaSettings",
    "NotSupported",
    "OriginateError",
    "PipelineNotConfigured",
    "Playback",
    "PlaybackFailed",
    "ProviderError",
    "RecordingError",
    "Route",
    "VariableNotSet",
    "VoiceConfig",
    "VoxtraApp",
    "VoxtraError",
    "VoxtraSettings",
]
