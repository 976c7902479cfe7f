"""ChunkConverter: audio of any codec and rate in, one codec and rate out, per frame.

The one converter of the package. Its users: a transport's inbound side
(``set_inbound_format``; the RTP transport runs the resampling step of all its calls
at once, see ``resampler`` and ``finish``), the voice pipeline's input (every caller
frame is converted once, to PCM16 at the STT's rate, and VAD, turn detection and STT
all take that), the STT providers (a no-op for frames the pipeline already
converted; a caller of the provider alone may send anything), and ``audio_stream()``.

It belongs to one stream: its resampler keeps filter state across chunks, so sharing it
would mix two calls' audio. Resampling is :class:`StreamResampler` (per-frame output,
2 ms of delay at 16 kHz, no bursts); ``flush()`` hands over the filter's tail at the
end of a stream or an utterance.
"""

from __future__ import annotations

from voxtra.errors import MediaError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.g711 import decode, pcm16_to_alaw, pcm16_to_ulaw
from voxtra.media.resample import Quality, StreamResampler

__all__ = ["ChunkConverter"]


class ChunkConverter:
    """Converts each chunk to ``codec`` at ``rate`` (per-frame output, no bursts).

    ``source_rate``: the rate most chunks will come at (a transport's wire rate); its
    resampler is built at once and exposed as ``resampler`` for batching. Chunks at
    another rate are still converted (a new resampler replaces the old one).
    """

    def __init__(
        self,
        codec: Codec,
        rate: int,
        *,
        source_rate: int | None = None,
        quality: Quality = "HQ",
    ) -> None:
        if codec is not Codec.PCM16 and rate != 8000:
            raise MediaError(f"{codec} audio is 8 kHz; ask for pcm16 at {rate} Hz instead")
        self.codec = codec
        self.rate = rate
        self.quality: Quality = quality
        self.resampler: StreamResampler | None = None
        """Resampler from the current input rate to ``rate`` (None while they match)."""
        if source_rate is not None and source_rate != rate:
            self.resampler = StreamResampler(source_rate, rate, quality)

    def convert(self, chunk: AudioChunk) -> AudioChunk:
        """``chunk`` in the target format (the same object when it already is)."""
        if chunk.codec is self.codec and chunk.sample_rate == self.rate:
            return chunk
        pcm = decode(chunk.data, chunk.codec)
        if chunk.sample_rate != self.rate:
            rs = self.resampler
            if rs is None or rs.in_rate != chunk.sample_rate:
                rs = self.resampler = StreamResampler(chunk.sample_rate, self.rate, self.quality)
            pcm = rs.process(pcm)
        return self.finish(pcm)

    def finish(self, pcm: bytes) -> AudioChunk:
        """PCM16 at ``rate`` -> a chunk in the target codec (the last step of ``convert``)."""
        if self.codec is Codec.ULAW:
            return AudioChunk(pcm16_to_ulaw(pcm), 8000, Codec.ULAW)
        if self.codec is Codec.ALAW:
            return AudioChunk(pcm16_to_alaw(pcm), 8000, Codec.ALAW)
        return AudioChunk(pcm, self.rate, Codec.PCM16)

    def flush(self) -> AudioChunk:
        """The resampler's tail (its delay, silence-padded) in the target format, and a
        fresh filter for what follows: call it at the end of a stream or utterance."""
        if self.resampler is None:
            return self.finish(b"")
        return self.finish(self.resampler.flush())
