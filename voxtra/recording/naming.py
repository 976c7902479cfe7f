"""Recording names and formats: what is safe to hand to Asterisk, a disk and a bucket.

A recording name ends up as a file name in Asterisk's spool, in our own spool and
in object keys, so it is held to a small safe alphabet. Rejecting a bad name early
with a clear message beats a path traversal or a confusing ARI 400 later.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from voxtra.errors import RecordingError

__all__ = [
    "MAX_NAME_LENGTH",
    "SUPPORTED_FORMATS",
    "AudioFormat",
    "InvalidRecordingName",
    "generate_recording_name",
    "sanitize_component",
    "validate_format",
    "validate_recording_name",
]

MAX_NAME_LENGTH = 128
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")


class InvalidRecordingName(RecordingError, ValueError):
    """A recording name or format was rejected; the message says which rule it broke."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What Voxtra knows about one Asterisk recording format.

    ``bytes_per_second`` is set for headerless constant-rate formats, so duration can
    be computed from a file's size; ``None`` means the file carries a header (WAV).
    """

    name: str
    extension: str
    sample_rate: int
    content_type: str
    bytes_per_second: int | None


# Asterisk's format names; the file extension Asterisk writes is the same word.
SUPPORTED_FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav", "wav", 8000, "audio/wav", None),
        AudioFormat("wav16", "wav16", 16000, "audio/wav", None),
        AudioFormat("sln", "sln", 8000, "audio/L16;rate=8000", 16000),
        AudioFormat("sln16", "sln16", 16000, "audio/L16;rate=16000", 32000),
        AudioFormat("sln48", "sln48", 48000, "audio/L16;rate=48000", 96000),
        AudioFormat("ulaw", "ulaw", 8000, "audio/basic", 8000),
        AudioFormat("alaw", "alaw", 8000, "audio/x-alaw-basic", 8000),
        # GSM 06.10: 33-byte frames of 20 ms.
        AudioFormat("gsm", "gsm", 8000, "audio/x-gsm", 1650),
        # G.722: 64 kbit/s for 16 kHz audio.
        AudioFormat("g722", "g722", 16000, "audio/G722", 8000),
        # G.729: 8 kbit/s (passthrough only in Asterisk without a licensed codec).
        AudioFormat("g729", "g729", 8000, "audio/G729", 1000),
    )
}


def validate_recording_name(name: str) -> str:
    """Return ``name`` if it is a safe recording name, else raise InvalidRecordingName.

    Rules: 1 to 128 characters from ``[A-Za-z0-9_.-]``, not starting with a dot, and
    no ``..`` anywhere (no path separators, no control characters, no traversal).
    """
    if not isinstance(name, str):
        raise InvalidRecordingName(f"recording name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidRecordingName("recording name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRecordingName(
            f"recording name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidRecordingName(f"recording name {name!r} contains control characters")
    if "/" in name or "\\" in name:
        raise InvalidRecordingName(f"recording name {name!r} must not contain a path separator")
    if ".." in name:
        raise InvalidRecordingName(f"recording name {name!r} must not contain '..'")
    if name.startswith("."):
        raise InvalidRecordingName(f"recording name {name!r} must not start with '.'")
    if not _SAFE_NAME.fullmatch(name):
        bad = "".join(sorted({c for c in name if not _SAFE_NAME.fullmatch(c)}))
        raise InvalidRecordingName(
            f"recording name {name!r} has characters outside [A-Za-z0-9_.-]: {bad!r}"
        )
    return name


def sanitize_component(value: str | None, *, fallback: str = "unknown", limit: int = 64) -> str:
    """Squash arbitrary text (a caller ID, a channel id) into a safe name fragment."""
    if not value:
        return fallback
    cleaned = _UNSAFE_CHARS.sub("_", value)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("._")[:limit].strip("._")
    return cleaned or fallback


def generate_recording_name(call_id: str, *, now: datetime | None = None) -> str:
    """A fresh, unique, valid name: ``<call id>-<UTC time>-<random>``.

    The call id and time make names readable and sortable; 12 random hex digits
    make them unique even for two recordings started in the same second.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{sanitize_component(call_id, fallback='call')}-{stamp}-{uuid.uuid4().hex[:12]}"
    return validate_recording_name(name)


def validate_format(fmt: str) -> AudioFormat:
    """Look up an Asterisk recording format by name, or raise with the supported list."""
    if isinstance(fmt, str):
        found = SUPPORTED_FORMATS.get(fmt)
        if found is not None:
            return found
    supported = ", ".join(SUPPORTED_FORMATS)
    raise InvalidRecordingName(f"unsupported recording format {fmt!r}; supported: {supported}")
