"""AudioChunk: the one unit of audio that moves between transports, pipeline and users.

PCM inside Voxtra is always signed 16-bit, mono, little-endian (the host order of
numpy on every platform we run on). Wire formats with other byte orders (RTP's
big-endian ``slin``) are converted by the transport that speaks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from voxtra.errors import MediaError

__all__ = ["FRAME_MS", "AudioChunk", "Codec", "InvalidAudioChunk"]

FRAME_MS = 20
"""The frame length every transport moves: 20 ms, as telephony does."""


class Codec(StrEnum):
    PCM16 = "pcm16"
    """Signed 16-bit little-endian linear PCM at ``sample_rate``."""
    ULAW = "ulaw"
    """G.711 mu-law, one byte per sample, 8 kHz."""
    ALAW = "alaw"
    """G.711 A-law, one byte per sample, 8 kHz."""

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is Codec.PCM16 else 1


class InvalidAudioChunk(MediaError, ValueError):
    """An ``AudioChunk`` that cannot be read as it says (a rate or length that does not
    fit its codec). A ValueError too, which it was before it was a ``VoxtraError``."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of mono audio: encoded or PCM bytes, with what it takes to read them."""

    data: bytes
    sample_rate: int = 8000
    codec: Codec = Codec.ULAW

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise InvalidAudioChunk(f"sample_rate must be positive, not {self.sample_rate}")
        if self.codec is not Codec.PCM16 and self.sample_rate != 8000:
            raise InvalidAudioChunk(f"{self.codec} audio is 8 kHz, not {self.sample_rate} Hz")
        if len(self.data) % self.codec.bytes_per_sample:
            raise InvalidAudioChunk("PCM16 data must be a whole number of 2-byte samples")

    @property
    def samples(self) -> int:
        return len(self.data) // self.codec.bytes_per_sample

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples / self.sample_rate

    @property
    def duration_ms(self) -> float:
        return self.samples * 1000.0 / self.sample_rate

    @staticmethod
    def frame_bytes(codec: Codec, sample_rate: int, ms: int = FRAME_MS) -> int:
        """Bytes in one frame of ``ms`` milliseconds."""
        return sample_rate * ms // 1000 * codec.bytes_per_sample

    @classmethod
    def silence(
        cls, codec: Codec = Codec.ULAW, sample_rate: int = 8000, ms: int = FRAME_MS
    ) -> AudioChunk:
        """A frame of digital silence in ``codec``."""
        n = sample_rate * ms // 1000
        fill = {Codec.PCM16: b"\x00\x00", Codec.ULAW: b"\xff", Codec.ALAW: b"\xd5"}[codec]
        return cls(fill * n, sample_rate, codec)
