"""The tone detector from samples: a beep is found, speech and DTMF are not beeps."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from voxtra.errors import MediaError
from voxtra.media.tones import ToneDetector, goertzel_power, pcm16_samples
from voxtra.testing import audio

RATE = 8000
FRAME = 160  # 20 ms


def floats(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float64) / 32768.0


def run(detector: ToneDetector, samples: np.ndarray) -> list[tuple[float, float, float]]:
    """Every tone found, as (freq, start ms, duration ms)."""
    found = []
    x = floats(samples)
    for i in range(0, len(x) - FRAME + 1, FRAME):
        tone = detector.feed(x[i : i + FRAME])
        if tone is not None:
            found.append((tone.freq, tone.start_ms, tone.duration_ms))
    tone = detector.flush()
    if tone is not None:
        found.append((tone.freq, tone.start_ms, tone.duration_ms))
    return found


def test_the_matrix_form_equals_the_goertzel_recurrence() -> None:
    rng = np.random.default_rng(7)
    frame = rng.uniform(-0.5, 0.5, FRAME)
    detector = ToneDetector(RATE)
    powers = detector.powers(frame)
    for index in (0, 17, 40, len(detector.freqs) - 1):
        expected = goertzel_power(frame, RATE, float(detector.freqs[index]))
        assert powers[index] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_beep_between_silences_is_one_tone_with_its_frequency_and_length() -> None:
    signal = np.concatenate(
        [audio.silence(0.5), audio.tone(700, 0.42, amplitude=0.3), audio.silence(0.5)]
    )
    (tone,) = run(ToneDetector(RATE), signal)
    freq, start, duration = tone
    assert freq == pytest.approx(700, abs=25)
    assert start == pytest.approx(500, abs=20)
    assert duration == pytest.approx(420, abs=40)


def test_a_tone_between_grid_points_and_a_quiet_one_are_found() -> None:
    loud = audio.tone(1012.5, 0.3, amplitude=0.3)  # half-way between 1000 and 1025
    quiet = audio.tone(440, 0.3, amplitude=0.02)  # -37 dBFS
    found = run(ToneDetector(RATE), np.concatenate([loud, audio.silence(0.2), quiet]))
    assert len(found) == 2
    assert abs(found[0][0] - 1012.5) <= 12.5 and abs(found[1][0] - 440) <= 12.5


def test_short_blips_noise_and_dtmf_are_not_tones() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 0.1, RATE) * 32767).astype(np.int16)
    blip = audio.tone(1000, 0.2)  # 200 ms: under min_ms (speech has runs that long)
    dtmf = audio.two_tone(852, 1477, 0.5)  # "9": two tones share the energy
    signal = np.concatenate([noise, audio.silence(0.2), blip, audio.silence(0.2), dtmf])
    assert run(ToneDetector(RATE), signal) == []


def test_pcm16_bytes_are_read_little_endian() -> None:
    samples = audio.tone(700, 0.02, amplitude=0.5)
    assert pcm16_samples(samples.astype("<i2").tobytes()) == pytest.approx(floats(samples))


def test_a_search_band_outside_the_audio_is_refused() -> None:
    with pytest.raises(MediaError):
        ToneDetector(8000, high=5000)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_speech_is_not_a_tone(tmp_path: Path) -> None:
    path = audio.speech_like_wav(
        "Hello, you have reached the voicemail of Alex. Please leave a message.",
        tmp_path / "greeting.wav",
    )
    samples, rate = audio.read_wav(path)
    assert rate == RATE
    detector = ToneDetector(RATE)
    assert run(detector, samples) == []
    # ...and the same greeting followed by a beep: the beep alone is reported
    signal = np.concatenate([samples, audio.tone(1000, 0.5, amplitude=0.3)])
    (tone,) = run(ToneDetector(RATE), signal)
    assert tone[0] == pytest.approx(1000, abs=25)
    assert tone[1] >= 1000 * len(samples) / RATE - 20
