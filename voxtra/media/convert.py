"""ChunkConverter: audio of any codec and rate in, one codec and rate out.

For a live reader that wants one format from chunks that may differ (``audio_stream()``
after the transport switched formats). It belongs to one stream: its
resampler keeps filter state across chunks, so sharing it would mix two calls' audio.
"""

from __future__ import annotations

from voxtra.errors import MediaError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.g711 import decode, encode
from voxtra.media.resample import StreamResampler

__all__ = ["ChunkConverter"]


class ChunkConverter:
    """Converts each chunk to ``codec`` at ``rate`` (per-frame output, no bursts)."""

    def __init__(self, codec: Codec, rate: int) -> None:
        if codec is not Codec.PCM16 and rate != 8000:
            raise MediaError(f"{codec} audio is 8 kHz; ask for pcm16 at {rate} Hz instead")
        self.codec = codec
        self.rate = rate
        self._resampler: StreamResampler | None = None

    def convert(self, chunk: AudioChunk) -> AudioChunk:
        if chunk.codec is self.codec and chunk.sample_rate == self.rate:
            return chunk
        pcm = decode(chunk.data, chunk.codec)
        if chunk.sample_rate != self.rate:
            if self._resampler is None or self._resampler.in_rate != chunk.sample_rate:
                self._resampler = StreamResampler(chunk.sample_rate, self.rate)
            pcm = self._resampler.process(pcm)
        return encode(AudioChunk(pcm, self.rate, Codec.PCM16), self.codec)
