"""Tone detection (sans-IO): a voicemail beep, or any steady tone, in 20 ms frames.

:func:`goertzel_power` is the Goertzel recurrence for one frequency, the reference.
:class:`ToneDetector` evaluates the same sum for a grid of candidate frequencies at
once, as one matrix product per frame (each row of its matrix is the Goertzel filter's
impulse response at one frequency, so the result equals the recurrence's: the unit
tests check it), and decides per frame whether the frame is a tone:

- its loudest candidate carries most of the frame's energy (``purity``: a pure sine
  scores about 1, 0.81 at worst between two grid points 25 Hz apart), and
- it is loud enough (``min_dbfs``).

A run of tone frames at one frequency (within one grid step) that lasts ``min_ms`` is
a :class:`Tone`; it is reported once the tone ends (the first frame that is not it),
which is when a voicemail box starts recording. Nothing here does I/O: frames in,
tones out, tested from samples.

Why 0.7 and 250 ms: speech has frames where one harmonic dominates. Over all of
Asterisk's English prompts (1,529 s, 8 kHz, one female voice) the longest such run was
240 ms at purity 0.6 and 200 ms at 0.7, always below 430 Hz; the voicemail beep
(``beep.wav``, 700 Hz) is 420 ms of frames scoring 1.0. Beeps shorter than 250 ms are
missed with these defaults (pass ``min_ms``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxtra.errors import MediaError

__all__ = ["Tone", "ToneDetector", "goertzel_power", "pcm16_samples"]

Samples = npt.NDArray[np.float64]


def pcm16_samples(data: bytes) -> Samples:
    """Little-endian PCM16 bytes as floats in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


def goertzel_power(samples: npt.ArrayLike, rate: int, freq: float) -> float:
    """The power of ``samples`` at ``freq`` by the Goertzel recurrence, scaled so that a
    full-scale sine at exactly ``freq`` gives about 1 (``|X(f)|^2 * 4 / N^2``)."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 0.0
    w = 2.0 * math.pi * freq / rate
    coeff = 2.0 * math.cos(w)
    s1 = s2 = 0.0
    for sample in x:
        s0 = float(sample) + coeff * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 4.0 * power / (n * n)


@dataclass(frozen=True, slots=True)
class Tone:
    """A steady tone heard: its frequency (Hz) and when it started and ended, in ms
    from the first frame fed."""

    freq: float
    start_ms: float
    end_ms: float
    level_dbfs: float

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


class ToneDetector:
    """Feed 20 ms frames of PCM16; get a :class:`Tone` when a steady one ends."""

    def __init__(
        self,
        rate: int = 8000,
        *,
        low: float = 300.0,
        high: float = 3000.0,
        step: float = 25.0,
        purity: float = 0.7,
        min_dbfs: float = -45.0,
        min_ms: float = 250.0,
        max_ms: float = 5000.0,
    ) -> None:
        if rate <= 0 or not 0 < low < high < rate / 2 or step <= 0:
            raise MediaError(f"tone search {low}-{high} Hz by {step} does not fit {rate} Hz audio")
        self.rate = rate
        self.freqs: Samples = np.arange(low, high + step / 2, step, dtype=np.float64)
        self.step = step
        self.purity = purity
        self.min_dbfs = min_dbfs
        self.min_ms = min_ms
        self.max_ms = max_ms
        self._matrices: dict[int, tuple[Samples, Samples]] = {}
        self._clock_ms = 0.0
        self.last_freq: float | None = None
        """The tone frequency of the last frame fed (None: that frame was no tone)."""
        self._run_freq: float | None = None
        self._run_start = 0.0
        self._run_levels: list[float] = []

    def _basis(self, n: int) -> tuple[Samples, Samples]:
        basis = self._matrices.get(n)
        if basis is None:
            # Goertzel's output after n samples equals the DFT sum at the filter's
            # frequency, up to a phase: sum x[k] e^{-jwk}. Its cos and sin parts, for
            # every candidate at once.
            k = np.arange(n, dtype=np.float64)
            w = 2.0 * np.pi * self.freqs[:, None] / self.rate
            basis = (np.cos(w * k), np.sin(w * k))
            self._matrices[n] = basis
        return basis

    def powers(self, samples: Samples) -> Samples:
        """Every candidate's power in ``samples`` (same scale as :func:`goertzel_power`)."""
        n = len(samples)
        if n == 0:
            return np.zeros(len(self.freqs))
        cos, sin = self._basis(n)
        re = cos @ samples
        im = sin @ samples
        return np.asarray(4.0 * (re * re + im * im) / (n * n), dtype=np.float64)

    def classify(self, samples: Samples) -> tuple[float | None, float]:
        """``(frequency, level dBFS)`` if ``samples`` is a tone frame, else ``(None, level)``."""
        if len(samples) == 0:
            return None, -100.0
        mean_square = float(np.mean(samples * samples))
        level = 10.0 * math.log10(mean_square) if mean_square > 1e-10 else -100.0
        if level < self.min_dbfs:
            return None, level
        powers = self.powers(samples)
        best = int(np.argmax(powers))
        # A sine of amplitude A has mean square A^2/2 and scaled power A^2: their
        # ratio over 2 is the share of the frame's energy at that frequency.
        share = float(powers[best]) / (2.0 * mean_square)
        return (float(self.freqs[best]) if share >= self.purity else None), level

    def feed(self, samples: Samples) -> Tone | None:
        """One frame (floats, as :func:`pcm16_samples` gives); a tone that just ended."""
        start = self._clock_ms
        self._clock_ms += 1000.0 * len(samples) / self.rate
        freq, level = self.classify(samples)
        self.last_freq = freq
        run = self._run_freq
        if freq is not None and run is not None and abs(freq - run) <= self.step * 1.01:
            self._run_levels.append(level)
            return None
        ended = self._close(start)
        if freq is not None:
            self._run_freq, self._run_start, self._run_levels = freq, start, [level]
        return ended

    def feed_pcm16(self, data: bytes) -> Tone | None:
        return self.feed(pcm16_samples(data))

    def flush(self) -> Tone | None:
        """The tone still sounding at the end of the audio, if long enough."""
        return self._close(self._clock_ms)

    def _close(self, end: float) -> Tone | None:
        freq, self._run_freq = self._run_freq, None
        if freq is None:
            return None
        duration = end - self._run_start
        levels, self._run_levels = self._run_levels, []
        if not self.min_ms <= duration <= self.max_ms:
            return None
        return Tone(freq, self._run_start, end, round(float(np.mean(levels)), 1))

    @property
    def heard_ms(self) -> float:
        """Milliseconds of audio fed so far."""
        return self._clock_ms
