"""Streaming resampler: frame-by-frame output must match a one-shot resample."""

from __future__ import annotations

import numpy as np
import pytest

from voxtra.errors import MediaError
from voxtra.media.resample import StreamResampler, resample_once


def _sine(freq: float, rate: int, seconds: float, amp: float = 12000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spec))])


def _stream(pcm: bytes, rs: StreamResampler, frame_bytes: int) -> bytes:
    out = b"".join(rs.process(pcm[i : i + frame_bytes]) for i in range(0, len(pcm), frame_bytes))
    return out + rs.flush()


RATE_PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (24000, 8000),
    (8000, 48000),
    (48000, 16000),
    (22050, 16000),
    (22050, 8000),
]


@pytest.mark.parametrize(("src", "dst"), [p for p in RATE_PAIRS if 22050 not in p])
def test_framewise_matches_one_shot_after_the_filter_delay(src: int, dst: int) -> None:
    pcm = _sine(440.0, src, 1.0)
    rs = StreamResampler(src, dst)
    framed = _stream(pcm, rs, src // 50 * 2)
    whole = resample_once(pcm, src, dst)
    a = np.frombuffer(framed, "<i2").astype(np.float64)
    b = np.frombuffer(whole, "<i2").astype(np.float64)
    delay = round(rs.delay_samples * dst / src)  # whole samples for these pairs
    steady = slice(200, dst - 200)  # away from both ends' transients
    error = a[delay:][steady] - b[steady]
    assert np.sqrt(np.mean(error**2)) < 12000 * 0.01  # within 1% of the amplitude
    assert abs(_dominant_hz(framed, dst) - 440.0) < 3.0


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_every_frame_in_gives_a_frame_out(src: int, dst: int) -> None:
    """No bursts: a live pacer needs output for each 20 ms of input."""
    rs = StreamResampler(src, dst)
    pcm = _sine(300.0, src, 0.4)
    step = src // 50 * 2
    sizes = [len(rs.process(pcm[i : i + step])) // 2 for i in range(0, len(pcm), step)]
    per_frame = dst // 50
    assert all(abs(n - per_frame) <= 1 for n in sizes[1:]), sizes
    assert abs(sizes[0] - per_frame) <= 1 + rs.delay_samples * dst / src


def test_downsampling_removes_what_would_alias() -> None:
    # 5 kHz cannot exist at 8 kHz: it must be filtered out, not folded to 3 kHz.
    out = _stream(_sine(5000.0, 16000, 0.5), StreamResampler(16000, 8000), 640)
    x = np.frombuffer(out, "<i2").astype(np.float64)[100:-100]
    assert 20 * np.log10(np.sqrt(np.mean(x**2)) / 12000 + 1e-12) < -50


def test_passband_level_is_kept() -> None:
    out = _stream(_sine(1000.0, 22050, 0.5), StreamResampler(22050, 8000), 882)
    x = np.frombuffer(out, "<i2").astype(np.float64)[200:-200]
    rms = np.sqrt(np.mean(x**2))
    assert abs(20 * np.log10(rms / (12000 / np.sqrt(2)))) < 0.5


def test_no_discontinuity_at_frame_edges() -> None:
    pcm = _sine(300.0, 8000, 0.6)
    out = np.frombuffer(_stream(pcm, StreamResampler(8000, 16000), 320), "<i2").astype(float)
    # Skip the filter's start/end transients; a 300 Hz sine at 16 kHz and amplitude 12000 moves
    # at most 2*pi*300/16000*12000 ~ 1414 per sample. A click at a frame edge would jump far more.
    steady = out[200:-200]
    assert np.max(np.abs(np.diff(steady))) < 1500


def test_passthrough_when_rates_equal() -> None:
    rs = StreamResampler(16000, 16000)
    assert rs.passthrough
    data = _sine(100.0, 16000, 0.02)
    assert rs.process(data) is data
    assert rs.flush() == b""


def test_odd_byte_is_carried_to_next_call() -> None:
    pcm = _sine(440.0, 8000, 0.5)
    rs = StreamResampler(8000, 16000)
    out = b"".join(rs.process(pcm[i : i + 161]) for i in range(0, len(pcm), 161)) + rs.flush()
    ref = _stream(pcm, StreamResampler(8000, 16000), 320)
    a, b = np.frombuffer(out, "<i2").astype(int), np.frombuffer(ref, "<i2").astype(int)
    assert len(a) == len(b)
    assert np.array_equal(a, b)  # chunking never changes the result


def test_unsupported_rate_is_a_media_error() -> None:
    with pytest.raises(MediaError):
        StreamResampler(8000, 11025)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (8000, 16000),
        (16000, 8000),
        (16000, 24000),
        (24000, 16000),
        (8000, 24000),
        (48000, 8000),
        (8000, 48000),
        (22050, 16000),
    ],
)
def test_fast_filter_paths_equal_the_gather_path(src: int, dst: int) -> None:
    """The matrix-product shortcuts compute exactly what the general gather path does."""
    pcm = _sine(700.0, src, 0.3)
    fast = StreamResampler(src, dst)
    slow = StreamResampler(src, dst)
    slow.dense_max_down = 0  # force the gather path
    step = src // 50 * 2
    for i in range(0, len(pcm), step):
        a = np.frombuffer(fast.process(pcm[i : i + step]), "<i2").astype(int)
        b = np.frombuffer(slow.process(pcm[i : i + step]), "<i2").astype(int)
        assert len(a) == len(b)
        assert np.max(np.abs(a - b), initial=0) <= 1  # float summation order only


@pytest.mark.parametrize(("src", "dst"), [(16000, 24000), (24000, 16000), (8000, 24000)])
def test_framewise_matches_one_shot_for_mixed_ratios(src: int, dst: int) -> None:
    pcm = _sine(440.0, src, 1.0)
    rs = StreamResampler(src, dst)
    framed = _stream(pcm, rs, src // 50 * 2)
    assert abs(_dominant_hz(framed, dst) - 440.0) < 3.0
    # one second of output, plus the filter delay drained by flush()
    assert abs(len(framed) // 2 - dst - rs.delay_samples * dst / src) <= 2


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (16000, 8000), (24000, 8000), (16000, 24000), (22050, 8000)]
)
def test_resample_many_equals_one_stream_at_a_time(src: int, dst: int) -> None:
    """Batched filtering gives each stream what ``process`` would, and the same state."""
    from voxtra.media.resample import resample_many

    streams = [_sine(200.0 + 97 * k, src, 0.5, amp=3000.0 * (k % 4 + 1)) for k in range(7)]
    batched = [StreamResampler(src, dst) for _ in streams]
    alone = [StreamResampler(src, dst) for _ in streams]
    step = src // 50 * 2
    for i in range(0, len(streams[0]), step):
        frames = [s[i : i + step] for s in streams]
        if i == 3 * step:
            frames[2] = frames[2][:100]  # one stream out of step: it falls back, then rejoins
        got = resample_many(batched, frames)
        want = [rs.process(f) for rs, f in zip(alone, frames, strict=True)]
        for g, w in zip(got, want, strict=True):
            a, b = np.frombuffer(g, "<i2").astype(int), np.frombuffer(w, "<i2").astype(int)
            assert len(a) == len(b)
            assert np.max(np.abs(a - b), initial=0) <= 1
    for b_rs, a_rs in zip(batched, alone, strict=True):  # the state matches too
        assert abs(len(b_rs.flush()) - len(a_rs.flush())) == 0


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (16000, 24000)])
def test_batched_20ms_frames_use_the_small_block_form(src: int, dst: int) -> None:
    """Live frames are filtered as one small block down the diagonal (3.8x fewer
    multiply-adds at 8 -> 16 kHz than the whole-frame matrix), with the same output."""
    from voxtra.media import resample

    resample._TOEPLITZ.clear()
    resample._BLOCKS.clear()
    streams = [StreamResampler(src, dst) for _ in range(3)]
    alone = [StreamResampler(src, dst) for _ in range(3)]
    frames = [_sine(300.0 * (k + 1), src, 0.02, amp=8000.0) for k in range(3)]
    got = resample.resample_many(streams, frames)
    blocks = [b for b in resample._BLOCKS.values() if b is not None]
    assert blocks, "no block form for 20 ms frames"
    block, _, _, count = blocks[0]
    t, _ = next(iter(resample._TOEPLITZ.values()))
    assert block.size * count * 3 < t.size  # at least 3x less work
    for g, rs, f in zip(got, alone, frames, strict=True):
        want = np.frombuffer(rs.process(f), "<i2").astype(int)
        assert np.max(np.abs(np.frombuffer(g, "<i2").astype(int) - want)) <= 1
