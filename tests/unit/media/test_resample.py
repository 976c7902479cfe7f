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


@pytest.mark.parametrize(
    ("src", "dst"),
    [(8000, 16000), (16000, 8000), (24000, 8000), (8000, 48000), (48000, 16000), (22050, 16000)],
)
def test_framewise_equals_one_shot_and_keeps_frequency(src: int, dst: int) -> None:
    pcm = _sine(440.0, src, 1.0)
    framed = _stream(pcm, StreamResampler(src, dst), src // 50 * 2)
    whole = resample_once(pcm, src, dst)
    a = np.frombuffer(framed, "<i2").astype(np.int32)
    b = np.frombuffer(whole, "<i2").astype(np.int32)
    assert abs(len(a) - len(b)) <= 2
    n = min(len(a), len(b))
    assert np.max(np.abs(a[:n] - b[:n])) <= 2  # int16 rounding only
    assert abs(_dominant_hz(framed, dst) - 440.0) < 3.0
    assert abs(len(a) - dst) <= 2  # one second in, one second out


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
    assert np.max(np.abs(a - b)) <= 2  # soxr rounds slightly differently per chunking


def test_unsupported_rate_is_a_media_error() -> None:
    with pytest.raises(MediaError):
        StreamResampler(8000, 11025)
