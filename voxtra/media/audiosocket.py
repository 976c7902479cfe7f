"""AudioSocket framing (Asterisk app/chan_audiosocket), sans-IO.

Each message: 1 type byte, 2-byte big-endian payload length, payload. Audio payloads
are signed 16-bit little-endian mono PCM (0x10 = 8 kHz; newer Asterisk adds 0x11-0x18
for 12-48 kHz). TCP delivers a byte stream, so ``AudioSocketParser.feed`` takes any
split or merge of messages and returns the complete ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum

from voxtra.errors import MediaError

__all__ = [
    "AudioSocketError",
    "AudioSocketParser",
    "AudioSocketProtocolError",
    "Kind",
    "Message",
    "build_audio",
    "build_dtmf",
    "build_error",
    "build_hangup",
    "build_message",
    "build_uuid",
]

MAX_PAYLOAD = 0xFFFF
_DTMF_DIGITS = "0123456789*#ABCDabcd"


class AudioSocketProtocolError(MediaError):
    """The byte stream is not valid AudioSocket framing."""


class Kind(IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10
    AUDIO_12K = 0x11
    AUDIO_16K = 0x12
    AUDIO_24K = 0x13
    AUDIO_32K = 0x14
    AUDIO_44K = 0x15
    AUDIO_48K = 0x16
    ERROR = 0xFF


AUDIO_RATES: dict[int, int] = {
    Kind.AUDIO: 8000,
    Kind.AUDIO_12K: 12000,
    Kind.AUDIO_16K: 16000,
    Kind.AUDIO_24K: 24000,
    Kind.AUDIO_32K: 32000,
    Kind.AUDIO_44K: 44100,
    Kind.AUDIO_48K: 48000,
}
_RATE_KIND = {rate: kind for kind, rate in AUDIO_RATES.items()}


class AudioSocketError(MediaError):
    """The peer reported an error message (type 0xff); ``code`` is its error byte."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"AudioSocket peer error code {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message. ``kind`` is the raw type byte (unknown types are kept)."""

    kind: int
    payload: bytes = b""

    @property
    def uuid(self) -> uuid.UUID:
        if self.kind != Kind.UUID:
            raise AudioSocketProtocolError("not a UUID message")
        return uuid.UUID(bytes=self.payload)

    @property
    def digit(self) -> str:
        if self.kind != Kind.DTMF:
            raise AudioSocketProtocolError("not a DTMF message")
        return self.payload.decode("ascii")

    @property
    def sample_rate(self) -> int | None:
        """Rate of an audio message; ``None`` for other kinds."""
        return AUDIO_RATES.get(self.kind)

    @property
    def error_code(self) -> int | None:
        return self.payload[0] if self.payload else None


def _validate(kind: int, payload: bytes) -> None:
    if kind == Kind.UUID and len(payload) != 16:
        raise AudioSocketProtocolError(f"UUID payload must be 16 bytes, got {len(payload)}")
    if kind == Kind.DTMF and (len(payload) != 1 or chr(payload[0]) not in _DTMF_DIGITS):
        raise AudioSocketProtocolError(f"invalid DTMF payload {payload!r}")
    if kind in AUDIO_RATES and len(payload) % 2:
        raise AudioSocketProtocolError("audio payload has an odd number of bytes")


class AudioSocketParser:
    """Incremental parser: ``feed`` bytes as they arrive, get whole messages back.

    After an error the parser is poisoned (the stream cannot be resynchronised).
    """

    def __init__(self, max_buffer: int = 4 * (MAX_PAYLOAD + 3)) -> None:
        self._buf = bytearray()
        self._max = max_buffer
        self._failed: AudioSocketProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 3:
            kind = buf[pos]
            length = (buf[pos + 1] << 8) | buf[pos + 2]
            end = pos + 3 + length
            if end > len(buf):
                break
            payload = bytes(buf[pos + 3 : end])
            try:
                _validate(kind, payload)
            except AudioSocketProtocolError as exc:
                self._failed = exc
                del buf[:]
                raise
            out.append(Message(kind, payload))
            pos = end
        del buf[:pos]
        if len(buf) > self._max:
            self._failed = AudioSocketProtocolError("unparsed data exceeds buffer limit")
            raise self._failed
        return out


def build_message(kind: int, payload: bytes = b"") -> bytes:
    if not 0 <= kind <= 0xFF:
        raise AudioSocketProtocolError(f"message type {kind} out of range")
    if len(payload) > MAX_PAYLOAD:
        raise AudioSocketProtocolError(f"payload of {len(payload)} bytes exceeds 65535")
    _validate(kind, payload)
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def build_hangup() -> bytes:
    return build_message(Kind.HANGUP)


def build_uuid(value: uuid.UUID) -> bytes:
    return build_message(Kind.UUID, value.bytes)


def build_dtmf(digit: str) -> bytes:
    return build_message(Kind.DTMF, digit.encode("ascii", "replace"))


def build_audio(pcm16le: bytes, sample_rate: int = 8000) -> bytes:
    """Audio message; ``pcm16le`` is signed 16-bit little-endian at ``sample_rate``."""
    kind = _RATE_KIND.get(sample_rate)
    if kind is None:
        raise AudioSocketProtocolError(f"AudioSocket has no message type for {sample_rate} Hz")
    return build_message(kind, pcm16le)


def build_error(code: int = 0) -> bytes:
    return build_message(Kind.ERROR, bytes([code & 0xFF]))
