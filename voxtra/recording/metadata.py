"""What Voxtra knows about one finished recording, and how it is measured.

The metadata travels with the audio: it is written next to the file in the spool
(so a recording stranded by a crash can still be delivered with its facts), stored
as object metadata by the sinks, and handed to ``on_delivered`` hooks. Size and
SHA-256 are computed from the bytes, so delivery can be verified end to end.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator

from voxtra.errors import RecordingError
from voxtra.recording.naming import validate_format, validate_recording_name

__all__ = [
    "FileFacts",
    "InvalidRecordingMetadata",
    "RecordingMetadata",
    "WavInfo",
    "finalize_wav_header",
    "measure_file",
    "parse_wav_header",
]

_HASH_BLOCK = 1 << 20
# Enough for a RIFF header with a few small chunks (LIST, fact) before "data".
_WAV_HEADER_PROBE = 64 * 1024


class InvalidRecordingMetadata(RecordingError, ValueError):
    """RecordingMetadata was built from bad values; the message lists each problem."""


class RecordingMetadata(BaseModel):
    """Facts about one recording; round-trips through ``model_dump_json``/``model_validate_json``.

    Times are UTC (a naive datetime is taken to be UTC). ``location`` is filled in
    once a sink has confirmed storage: one URI, or a list of them for a
    :class:`~voxtra.recording.sinks.CompositeSink`.
    """

    name: str
    call_id: str
    format: str = "wav"
    caller: str | None = None
    called_number: str | None = None
    sample_rate: int | None = None
    duration: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    local_path: Path | None = None
    location: str | list[str] | None = None
    end_reason: str | None = None
    """Why the recording ended: ``finish_on_key``, ``max_length``, ``silence_timeout``,
    ``stopped`` (``record_stop()``) or ``hangup``; None when not known (recovered)."""
    transcript: str | None = None
    """The recording's text, when it was recorded with ``transcribe=True``."""

    def __init__(self, **data: Any) -> None:
        # Callers catch Voxtra's errors, not pydantic's: re-raise as a RecordingError.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidRecordingMetadata(f"invalid recording metadata: {exc}") from exc

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_recording_name(value)

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        return validate_format(value).name

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        lowered = value.lower()
        if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
            raise ValueError("sha256 must be 64 hex digits")
        return lowered

    @field_validator("started_at", "ended_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @classmethod
    def for_file(
        cls, path: str | Path, *, name: str, call_id: str, **fields: Any
    ) -> RecordingMetadata:
        """Metadata for an existing file, measured from its bytes (blocking I/O).

        The format defaults to the file's extension when that names a known format.
        """
        path = Path(path)
        if "format" not in fields:
            fields["format"] = path.suffix.lstrip(".") or "wav"
        meta = cls(name=name, call_id=call_id, local_path=path, **fields)
        return meta.measured(path)

    def measured(self, path: str | Path) -> RecordingMetadata:
        """A copy with size, SHA-256, sample rate and duration taken from ``path``."""
        facts = measure_file(path, self.format)
        return self.model_copy(
            update={
                "size_bytes": facts.size_bytes,
                "sha256": facts.sha256,
                "sample_rate": facts.sample_rate,
                "duration": facts.duration,
            }
        )

    def object_metadata(self) -> dict[str, str]:
        """Flat key/values for object stores (S3 user metadata, GCS metadata).

        Every value is printable ASCII (space to ``~``): any other character, non-ASCII
        or a control character (``\\n``, ``\\r``, ``\\t``, ``\\x01`` ... in a caller ID), is
        replaced by ``?``. S3 sends user metadata as HTTP headers, and the HTTP client
        refuses a header holding a control character: such a recording failed every
        attempt and was never delivered. GCS sends it as JSON, where any text would do,
        but gets the same values, so both stores say the same about a recording.
        """
        pairs: dict[str, str | None] = {
            "recording-name": self.name,
            "call-id": self.call_id,
            "format": self.format,
            "caller": self.caller,
            "called-number": self.called_number,
            "sha256": self.sha256,
            "sample-rate": None if self.sample_rate is None else str(self.sample_rate),
            "duration": None if self.duration is None else f"{self.duration:.3f}",
            "started-at": None if self.started_at is None else self.started_at.isoformat(),
            "ended-at": None if self.ended_at is None else self.ended_at.isoformat(),
            "end-reason": self.end_reason,
        }
        return {key: _header_safe(value) for key, value in pairs.items() if value is not None}


def _header_safe(value: str) -> str:
    """``value`` with each character outside printable ASCII replaced by ``?``."""
    return "".join(c if " " <= c <= "~" else "?" for c in value)


@dataclass(frozen=True, slots=True)
class WavInfo:
    """The facts of a RIFF/WAVE header that matter for a recording."""

    audio_format: int  # 1 = PCM, 7 = mu-law, 6 = A-law, 49 = GSM 6.10 ...
    channels: int
    sample_rate: int
    byte_rate: int
    block_align: int
    bits_per_sample: int
    data_offset: int
    data_size: int  # as declared; 0 or 0xFFFFFFFF while a writer still streams


def parse_wav_header(data: bytes) -> WavInfo:
    """Parse the start of a WAV file (no I/O): walk RIFF chunks up to ``data``.

    Raises RecordingError when the bytes are not a WAV file or are cut short
    before the ``data`` chunk starts.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RecordingError("not a WAV file (no RIFF/WAVE header)")
    offset = 12
    fmt: tuple[int, int, int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(data):
                raise RecordingError("WAV 'fmt ' chunk is truncated")
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif chunk_id == b"data":
            if fmt is None:
                raise RecordingError("WAV 'data' chunk comes before its 'fmt ' chunk")
            audio_format, channels, rate, byte_rate, block_align, bits = fmt
            if rate == 0 or channels == 0:
                raise RecordingError("WAV header declares zero sample rate or channels")
            return WavInfo(
                audio_format=audio_format,
                channels=channels,
                sample_rate=rate,
                byte_rate=byte_rate or rate * channels * max(bits // 8, 1),
                block_align=block_align,
                bits_per_sample=bits,
                data_offset=body,
                data_size=chunk_size,
            )
        # RIFF chunks are padded to an even size.
        offset = body + chunk_size + (chunk_size & 1)
    raise RecordingError("WAV header is truncated before its 'data' chunk")


def finalize_wav_header(path: str | Path) -> bool:
    """Write the RIFF and data sizes of a WAV file its writer never finished (blocking I/O).

    Asterisk writes both sizes when it closes a recording. Killed mid-recording
    (SIGKILL, a crash), it leaves zeros, with the audio that reached the disk after
    them: measured in the Asterisk-kill fault test, 32 KB of audio (its write buffer)
    behind a header that Python's ``wave`` and other strict readers refuse. Returns
    True if the header was rewritten; a finished file (even one with chunks after
    ``data``) is left alone. Raises RecordingError when the file is not a WAV.
    """
    with Path(path).open("r+b") as handle:
        head = handle.read(_WAV_HEADER_PROBE)
        info = parse_wav_header(head)
        size = handle.seek(0, 2)
        available = max(size - info.data_offset, 0)
        if 0 < info.data_size <= available:
            return False  # finished (a smaller size may have chunks after the data)
        (riff_size,) = struct.unpack_from("<I", head, 4)
        if info.data_size == available == 0 and riff_size == info.data_offset - 8:
            # Finished with no audio (a recording stopped as it started): Asterisk wrote
            # both sizes. It was rewritten and logged as a killed writer's file.
            return False
        block = max(info.block_align, 1)
        data_size = available - available % block  # a cut write may end mid-sample
        handle.seek(info.data_offset - 4)
        handle.write(struct.pack("<I", data_size))
        handle.seek(4)
        handle.write(struct.pack("<I", info.data_offset + data_size - 8))
        handle.truncate(info.data_offset + data_size)
    return True


@dataclass(frozen=True, slots=True)
class FileFacts:
    size_bytes: int
    sha256: str
    sample_rate: int
    duration: float


def measure_file(path: str | Path, fmt: str) -> FileFacts:
    """Size, SHA-256, sample rate and duration of a recording file (blocking I/O).

    WAV duration comes from its header; for headerless formats from the byte count
    and the format's fixed rate. A WAV whose data size was never finalised (0 or
    larger than the file) is measured up to the end of the file.
    """
    audio_format = validate_format(fmt)
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            head = handle.read(_WAV_HEADER_PROBE)
            digest.update(head)
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
            size = handle.tell()
    except OSError as exc:
        raise RecordingError(f"cannot read recording file {path}: {exc}") from exc

    if audio_format.bytes_per_second is None:
        try:
            info = parse_wav_header(head)
        except RecordingError as exc:
            raise RecordingError(f"{path}: {exc}") from exc
        available = max(size - info.data_offset, 0)
        data_size = info.data_size
        if data_size == 0 or data_size > available:
            data_size = available
        sample_rate = info.sample_rate
        duration = data_size / info.byte_rate if info.byte_rate else 0.0
    else:
        sample_rate = audio_format.sample_rate
        duration = size / audio_format.bytes_per_second
    return FileFacts(
        size_bytes=size,
        sha256=digest.hexdigest(),
        sample_rate=sample_rate,
        duration=round(duration, 6),
    )
