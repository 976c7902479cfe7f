"""ChunkConverter, the package's one audio converter: any codec and rate in, one out."""

from __future__ import annotations

import numpy as np
import pytest

from voxtra.errors import MediaError
from voxtra.media import g711
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.resample import StreamResampler


def tone(n: int, rate: int, freq: float = 440.0) -> bytes:
    t = np.arange(n) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def test_a_chunk_already_in_the_target_format_is_passed_as_is() -> None:
    chunk = AudioChunk(tone(320, 16000), 16000, Codec.PCM16)
    assert ChunkConverter(Codec.PCM16, 16000).convert(chunk) is chunk


def test_g711_is_decoded_and_resampled_frame_by_frame() -> None:
    wire = g711.pcm16_to_ulaw(tone(1600, 8000))
    conv = ChunkConverter(Codec.PCM16, 16000)
    ref = StreamResampler(8000, 16000)
    for i in range(0, len(wire), 160):
        out = conv.convert(AudioChunk(wire[i : i + 160]))
        assert (out.codec, out.sample_rate, len(out.data)) == (Codec.PCM16, 16000, 640)
        assert out.data == ref.process(g711.ulaw_to_pcm16(wire[i : i + 160]))


def test_flush_gives_the_filter_tail_then_starts_afresh() -> None:
    conv = ChunkConverter(Codec.PCM16, 16000)
    pcm = tone(160, 8000)
    first = conv.convert(AudioChunk(pcm, 8000, Codec.PCM16)).data
    tail = conv.flush()
    assert tail.codec is Codec.PCM16 and tail.sample_rate == 16000
    # the filter's delay (taps/2 input samples) comes out at the end: nothing is lost
    assert len(first) + len(tail.data) == 2 * len(pcm) + 2 * 2 * 24
    assert conv.convert(AudioChunk(pcm, 8000, Codec.PCM16)).data == first  # fresh state
    assert ChunkConverter(Codec.PCM16, 8000).flush().data == b""  # nothing to resample


def test_source_rate_builds_the_resampler_for_batching() -> None:
    conv = ChunkConverter(Codec.PCM16, 16000, source_rate=8000)
    assert conv.resampler is not None and conv.resampler.in_rate == 8000
    assert ChunkConverter(Codec.PCM16, 8000, source_rate=8000).resampler is None
    # the three steps a transport runs for many calls at once give what convert gives
    pcm = tone(160, 8000)
    split = ChunkConverter(Codec.PCM16, 16000, source_rate=8000)
    assert split.resampler is not None
    stepwise = split.finish(split.resampler.process(pcm))
    assert stepwise == conv.convert(AudioChunk(pcm, 8000, Codec.PCM16))


def test_a_new_input_rate_gets_a_new_resampler() -> None:
    conv = ChunkConverter(Codec.PCM16, 16000)
    conv.convert(AudioChunk(tone(160, 8000), 8000, Codec.PCM16))
    out = conv.convert(AudioChunk(tone(480, 24000), 24000, Codec.PCM16))
    assert conv.resampler is not None and conv.resampler.in_rate == 24000
    assert out.sample_rate == 16000 and len(out.data) > 0


def test_g711_out_needs_8khz() -> None:
    out = ChunkConverter(Codec.ALAW, 8000).convert(AudioChunk(tone(320, 16000), 16000, Codec.PCM16))
    assert (out.codec, out.sample_rate, len(out.data)) == (Codec.ALAW, 8000, 160)
    with pytest.raises(MediaError, match="8 kHz"):
        ChunkConverter(Codec.ULAW, 16000)
