"""Streaming sample-rate conversion for PCM16 frames, over libsoxr.

A fresh resampler per frame would restart the filter at every 20 ms edge and click;
one ``soxr.ResampleStream`` per direction keeps the filter history across frames.

Latency note (measured with python-soxr 1.1): soxr's stream works in internal blocks,
so output comes in bursts, not per input frame. At ``quality="HQ"`` 8 -> 16 kHz gives
nothing for the first five 20 ms frames, then about 100 ms at once; ``"LQ"`` bursts
about every 60 ms; ``"QQ"`` (cubic, weak anti-aliasing) gives output for every frame
with under 1 ms of delay. The transports re-frame whatever arrives, so any quality
works; pick by the latency you can afford.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import soxr

from voxtra.errors import MediaError

__all__ = ["SUPPORTED_RATES", "Quality", "StreamResampler", "resample_once"]

logger = logging.getLogger(__name__)

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
SUPPORTED_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})


class StreamResampler:
    """Resample a stream of PCM16 little-endian mono bytes from ``in_rate`` to ``out_rate``.

    ``process`` may return fewer (or more) samples than the input duration because of
    the filter delay and soxr's block processing; ``flush`` drains the tail at the end.
    Equal rates pass bytes through untouched.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "HQ") -> None:
        for rate in (in_rate, out_rate):
            if rate not in SUPPORTED_RATES:
                raise MediaError(f"unsupported sample rate {rate} Hz")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality: Quality = quality
        self._stream: soxr.ResampleStream | None = None
        self._pending = b""  # an odd trailing byte waiting for its pair
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, pcm: bytes) -> bytes:
        """Feed PCM16 bytes, get whatever resampled PCM16 bytes are ready."""
        if self._stream is None:
            return pcm
        data = self._pending + pcm
        cut = len(data) - (len(data) % 2)
        self._pending = data[cut:]
        if not cut:
            return b""
        x = np.frombuffer(data[:cut], dtype="<i2")
        out: bytes = self._stream.resample_chunk(x).astype("<i2", copy=False).tobytes()
        return out

    def flush(self) -> bytes:
        """Drain the filter tail; the resampler is ready for a new stream afterwards."""
        if self._stream is None:
            return b""
        self._pending = b""
        out: bytes = (
            self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            .astype("<i2", copy=False)
            .tobytes()
        )
        self._stream.clear()
        return out

    def reset(self) -> None:
        """Forget filter state and buffered input (e.g. after a barge-in flush)."""
        self._pending = b""
        if self._stream is not None:
            self._stream.clear()


def resample_once(pcm: bytes, in_rate: int, out_rate: int, quality: Quality = "HQ") -> bytes:
    """Resample a whole buffer in one call (for files and tests, not live streams)."""
    if in_rate == out_rate:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2")
    out: bytes = soxr.resample(x, in_rate, out_rate, quality=quality).astype("<i2").tobytes()
    return out
