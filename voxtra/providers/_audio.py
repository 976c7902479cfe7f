"""Per-stream audio conversion for providers: G.711 decode/encode and streaming resampling.

Every provider wants one format (pocketsphinx: PCM16 at 16 kHz, Deepgram: whatever it was
told at connect time, webrtcvad: PCM16 at a rate it knows). A ``Converter`` belongs to one
stream, because ``soxr.ResampleStream`` keeps filter state across frames; sharing it
between calls would mix their audio.

Not :class:`voxtra.media.convert.ChunkConverter`: STT engines get whole utterances, so
soxr's block latency does not matter here, and swapping it for the per-frame FIR made
pocketsphinx drop final words in three real-call tests of one run (not investigated).
"""

from __future__ import annotations

import numpy as np
import soxr

from voxtra.errors import MediaError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec

__all__ = ["Converter"]


class Converter:
    """Turns incoming chunks of any codec/rate into bytes of one target codec and rate."""

    def __init__(self, codec: Codec, sample_rate: int) -> None:
        if codec is not Codec.PCM16 and sample_rate != 8000:
            raise MediaError(f"{codec} is 8 kHz only, not {sample_rate} Hz")
        self.codec = codec
        self.sample_rate = sample_rate
        self._resampler: soxr.ResampleStream | None = None
        self._in_rate: int | None = None

    def convert(self, chunk: AudioChunk) -> bytes:
        """Target-format bytes for ``chunk`` (may be a few samples short while soxr primes)."""
        if chunk.codec is self.codec and chunk.sample_rate == self.sample_rate:
            return chunk.data
        pcm = g711.decode(chunk.data, chunk.codec)
        if chunk.sample_rate != self.sample_rate:
            pcm = self._resample(pcm, chunk.sample_rate)
        if self.codec is Codec.PCM16:
            return pcm
        return g711.encode(AudioChunk(pcm, 8000, Codec.PCM16), self.codec).data

    def flush(self) -> bytes:
        """Whatever the resampler still holds, in the target format (end of stream)."""
        if self._resampler is None:
            return b""
        tail = np.asarray(self._resampler.resample_chunk(np.zeros(0, np.int16), last=True))
        self._resampler = None
        self._in_rate = None
        pcm = tail.astype("<i2").tobytes()
        if self.codec is Codec.PCM16 or not pcm:
            return pcm
        return g711.encode(AudioChunk(pcm, 8000, Codec.PCM16), self.codec).data

    def _resample(self, pcm: bytes, in_rate: int) -> bytes:
        if self._resampler is None or self._in_rate != in_rate:
            self._resampler = soxr.ResampleStream(
                in_rate, self.sample_rate, 1, dtype="int16", quality="HQ"
            )
            self._in_rate = in_rate
        out = self._resampler.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        return np.asarray(out).astype("<i2").tobytes()
