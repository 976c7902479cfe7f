"""Test signals and measurements for audio that went through a real call.

Tests play a known signal into a call, record what came back and measure it: pitch
(did the right audio arrive, was it resampled wrongly?), level (was it attenuated or
clipped?), where it starts and stops (barge-in latency) and whether it has holes
(dropped frames). Everything here works on int16 mono numpy arrays; the only I/O is
reading and writing WAV files and calling ``espeak-ng`` / ``sox`` for speech.
"""

from __future__ import annotations

import difflib
import math
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxtra.errors import ConfigError, MediaError

__all__ = [
    "Heard",
    "Samples",
    "active_segments",
    "answers_jsgf",
    "chirp",
    "dominant_frequency",
    "frame_levels_dbfs",
    "hear_answer",
    "longest_gap",
    "offset_after",
    "onset_after",
    "read_wav",
    "rms_dbfs",
    "silence",
    "speech_like_wav",
    "synthesize_wav",
    "tone",
    "two_tone",
    "write_wav",
]

Samples = npt.NDArray[np.int16]
"""Signed 16-bit mono PCM samples."""

_FULL_SCALE = 32767.0
_FLOOR_DBFS = -120.0
"""Level reported for digital silence, instead of minus infinity."""

StrPath = str | PathLike[str]


def _to_int16(signal: npt.NDArray[np.float64]) -> Samples:
    return np.clip(np.round(signal * _FULL_SCALE), -32768, 32767).astype(np.int16)


def _check_rate(rate: int) -> None:
    if rate <= 0:
        raise ConfigError(f"sample rate must be positive, not {rate}")


def _count(seconds: float, rate: int) -> int:
    _check_rate(rate)
    if seconds < 0:
        raise ConfigError(f"duration must not be negative, not {seconds}")
    return round(seconds * rate)


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> Samples:
    """A sine of ``freq`` Hz; ``amplitude`` is the peak as a fraction of full scale."""
    t = np.arange(_count(seconds, rate)) / rate
    return _to_int16(amplitude * np.sin(2.0 * math.pi * freq * t))


def two_tone(
    f1: float, f2: float, seconds: float, rate: int = 8000, amplitude: float = 0.5
) -> Samples:
    """Two sines of equal level (a DTMF-like pair); ``amplitude`` is the peak of the sum."""
    t = np.arange(_count(seconds, rate)) / rate
    mix = np.sin(2.0 * math.pi * f1 * t) + np.sin(2.0 * math.pi * f2 * t)
    return _to_int16(amplitude / 2.0 * mix)


def chirp(
    f_start: float, f_end: float, seconds: float, rate: int = 8000, amplitude: float = 0.5
) -> Samples:
    """A linear sweep from ``f_start`` to ``f_end`` Hz: every instant has a known pitch,
    so a recording can be aligned against it."""
    n = _count(seconds, rate)
    t = np.arange(n) / rate
    k = (f_end - f_start) / seconds if seconds > 0 else 0.0
    phase = 2.0 * math.pi * (f_start * t + 0.5 * k * t * t)
    return _to_int16(amplitude * np.sin(phase))


def silence(seconds: float, rate: int = 8000) -> Samples:
    """Digital silence."""
    return np.zeros(_count(seconds, rate), dtype=np.int16)


def write_wav(path: StrPath, samples: npt.ArrayLike, rate: int) -> Path:
    """Write 16-bit mono PCM WAV (the format pjsua, Asterisk and sox all read)."""
    _check_rate(rate)
    data = np.asarray(samples)
    if data.ndim != 1:
        raise ConfigError(f"expected mono samples (1-D), got shape {data.shape}")
    if data.dtype != np.int16:
        if np.issubdtype(data.dtype, np.floating):
            data = _to_int16(data.astype(np.float64))
        else:
            data = np.clip(data, -32768, 32767).astype(np.int16)
    out = Path(path)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())
    return out


def read_wav(path: StrPath) -> tuple[Samples, int]:
    """Read a 16-bit PCM WAV (any rate, mono or multi-channel) as mono int16 and its rate.

    Channels are averaged. A file that is not 16-bit PCM raises :class:`MediaError`.
    """
    try:
        with wave.open(str(path), "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate = w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise MediaError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width != 2:
        raise MediaError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is supported")
    usable = len(raw) - len(raw) % (2 * channels)
    data = np.frombuffer(raw[:usable], dtype="<i2")
    if channels > 1:
        mixed = data.reshape(-1, channels).astype(np.int32).mean(axis=1)
        return np.round(mixed).astype(np.int16), rate
    return data.astype(np.int16), rate


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is about -3 dBFS)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return _FLOOR_DBFS
    rms = math.sqrt(float(np.mean(x * x))) / _FULL_SCALE
    if rms <= 0.0:
        return _FLOOR_DBFS
    return max(_FLOOR_DBFS, 20.0 * math.log10(rms))


def dominant_frequency(samples: npt.ArrayLike, rate: int) -> float:
    """The frequency of the strongest spectral peak, in Hz, with sub-bin precision.

    Hann window, then a parabola through the log magnitudes of the peak bin and its
    neighbours (quadratic interpolation): typically within a few hundredths of a bin
    for a clean tone. Silence returns 0.0.
    """
    _check_rate(rate)
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 4:
        raise ConfigError("need at least 4 samples to estimate a frequency")
    x = x - float(np.mean(x))
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if spectrum[k] <= 0.0:
        return 0.0
    delta = 0.0
    if 0 < k < spectrum.size - 1:
        a, b, c = (math.log(max(float(v), 1e-300)) for v in spectrum[k - 1 : k + 2])
        denom = a - 2.0 * b + c
        if denom != 0.0:
            delta = 0.5 * (a - c) / denom
    return (k + delta) * rate / x.size


def frame_levels_dbfs(samples: npt.ArrayLike, rate: int, frame_ms: float = 10) -> list[float]:
    """The RMS level of each consecutive ``frame_ms`` frame (a trailing partial frame
    is dropped)."""
    _check_rate(rate)
    n = max(1, round(rate * frame_ms / 1000.0))
    x = np.asarray(samples, dtype=np.float64)
    frames = x.size // n
    if frames == 0:
        return []
    blocks = x[: frames * n].reshape(frames, n)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1)) / _FULL_SCALE
    with np.errstate(divide="ignore"):
        levels = 20.0 * np.log10(rms)
    return [max(_FLOOR_DBFS, float(v)) for v in levels]


def active_segments(
    samples: npt.ArrayLike,
    rate: int,
    threshold_dbfs: float = -40.0,
    frame_ms: float = 10,
    min_gap_ms: float = 0,
) -> list[tuple[float, float]]:
    """Spans (start_s, end_s) where the frame level is at or above ``threshold_dbfs``.

    Frame-granular: edges are accurate to ``frame_ms``. Spans separated by at most
    ``min_gap_ms`` of quiet are merged (0 keeps every gap).
    """
    frame_s = frame_ms / 1000.0
    levels = frame_levels_dbfs(samples, rate, frame_ms)
    spans: list[tuple[float, float]] = []
    start: int | None = None
    for i, level in enumerate(levels):
        if level >= threshold_dbfs:
            if start is None:
                start = i
        elif start is not None:
            spans.append((start * frame_s, i * frame_s))
            start = None
    if start is not None:
        spans.append((start * frame_s, len(levels) * frame_s))
    merged: list[tuple[float, float]] = []
    for span in spans:
        if merged and span[0] - merged[-1][1] <= min_gap_ms / 1000.0 + 1e-9:
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    return merged


def longest_gap(
    samples: npt.ArrayLike,
    rate: int,
    within: tuple[float, float] | None = None,
    threshold_dbfs: float = -40.0,
    frame_ms: float = 5,
) -> float:
    """The longest run of quiet frames (seconds) strictly inside the audible part.

    Only quiet between the first and the last active frame counts, so leading and
    trailing silence are not gaps. ``within`` (start_s, end_s) restricts the search to
    that part of the recording. A signal with no active frame has no gap: 0.0.
    """
    x = np.asarray(samples)
    if within is not None:
        x = x[max(0, round(within[0] * rate)) : max(0, round(within[1] * rate))]
    levels = frame_levels_dbfs(x, rate, frame_ms)
    active = [i for i, v in enumerate(levels) if v >= threshold_dbfs]
    if not active:
        return 0.0
    best = run = 0
    for level in levels[active[0] : active[-1] + 1]:
        if level < threshold_dbfs:
            run += 1
            best = max(best, run)
        else:
            run = 0
    return best * frame_ms / 1000.0


def onset_after(
    samples: npt.ArrayLike,
    rate: int,
    t: float = 0.0,
    threshold_dbfs: float = -40.0,
    frame_ms: float = 5,
    hold_ms: float = 20,
) -> float | None:
    """The first time at or after ``t`` (seconds) where the level rises to
    ``threshold_dbfs`` and stays there for ``hold_ms``; None if it never does."""
    return _first_run(samples, rate, t, threshold_dbfs, frame_ms, hold_ms, loud=True)


def offset_after(
    samples: npt.ArrayLike,
    rate: int,
    t: float = 0.0,
    threshold_dbfs: float = -40.0,
    frame_ms: float = 5,
    hold_ms: float = 100,
) -> float | None:
    """The first time at or after ``t`` where the audio stops: the level stays below
    ``threshold_dbfs`` for ``hold_ms`` (or until the end). None if it never stops.

    Used for barge-in: "the prompt stopped N ms after the caller began speaking".
    """
    return _first_run(samples, rate, t, threshold_dbfs, frame_ms, hold_ms, loud=False)


def _first_run(
    samples: npt.ArrayLike,
    rate: int,
    t: float,
    threshold_dbfs: float,
    frame_ms: float,
    hold_ms: float,
    *,
    loud: bool,
) -> float | None:
    frame_s = frame_ms / 1000.0
    levels = frame_levels_dbfs(samples, rate, frame_ms)
    need = max(1, math.ceil(hold_ms / frame_ms - 1e-9))
    first = max(0, math.floor(t / frame_s + 1e-9))
    run_start: int | None = None
    for i in range(first, len(levels)):
        hit = (levels[i] >= threshold_dbfs) if loud else (levels[i] < threshold_dbfs)
        if hit:
            if run_start is None:
                run_start = i
            if i - run_start + 1 >= need:
                return run_start * frame_s
        else:
            run_start = None
    if run_start is not None and not loud:
        return run_start * frame_s  # quiet until the end of the recording
    return None


def speech_like_wav(text: str, path: StrPath, rate: int = 8000) -> Path:
    """Synthesize ``text`` with the ``espeak-ng`` program into a 16-bit mono WAV at ``rate``.

    Real speech (not a tone) is what VAD and STT tests need. Resampling uses ``sox``
    when installed, else soxr. Needs the Debian packages espeak-ng (and optionally sox).
    """
    _check_rate(rate)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise MediaError("espeak-ng is not installed (apt-get install espeak-ng)")
    out = Path(path)
    with tempfile.TemporaryDirectory(prefix="voxtra-espeak-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        proc = subprocess.run(
            [espeak, "-w", str(raw), "--", text], capture_output=True, timeout=60, check=False
        )
        if proc.returncode != 0 or not raw.exists():
            raise MediaError(f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()}")
        sox = shutil.which("sox")
        if sox is not None:
            conv = subprocess.run(
                [sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed", str(out)],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if conv.returncode != 0:
                raise MediaError(f"sox failed: {conv.stderr.decode(errors='replace').strip()}")
            return out
        samples, src_rate = read_wav(raw)
    if src_rate != rate:
        import soxr

        resampled = soxr.resample(samples.astype(np.float32) / _FULL_SCALE, src_rate, rate)
        samples = _to_int16(np.asarray(resampled, dtype=np.float64))
    return write_wav(out, samples, rate)


async def synthesize_wav(text: str, path: StrPath, *, rate: int = 8000, wpm: int = 150) -> Path:
    """Speak ``text`` with the in-process espeak-ng into a 16-bit mono WAV at ``rate`` Hz.

    What a scripted caller says (the demo's questions, the voice agent tests'). Unlike
    :func:`speech_like_wav` no ``espeak-ng`` program is needed: the pip wheel's library
    does it (the ``espeak`` extra). 150 words per minute is what pocketsphinx hears best.
    """
    _check_rate(rate)
    import soxr

    from voxtra.providers.espeak_tts import EspeakTTS

    pieces: list[bytes] = []
    src_rate = EspeakTTS.sample_rate
    async for chunk in EspeakTTS(voice="en-us", rate=wpm).synthesize(text):
        pieces.append(chunk.data)
        src_rate = chunk.sample_rate
    samples = np.frombuffer(b"".join(pieces), dtype="<i2")
    if src_rate != rate:
        samples = soxr.resample(samples, src_rate, rate)
    return write_wav(path, np.asarray(samples, dtype=np.int16), rate)


def _spoken_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@dataclass(frozen=True)
class Heard:
    """What :func:`hear_answer` made of a recording: the ``answer`` it matches best
    (None when nothing was recognised), the words recognised (``text``) and how much
    of that answer they are, in order (``score``: 0..1, difflib's ratio over words)."""

    answer: str | None
    text: str
    score: float


def answers_jsgf(answers: Sequence[str]) -> str:
    """A JSGF grammar for "one of ``answers``, each word of it optional"."""
    alternatives = sorted({" ".join(f"[{w}]" for w in _spoken_words(a)) for a in answers} - {""})
    if not alternatives:
        raise ConfigError("answers_jsgf needs at least one answer with a word in it")
    return f"#JSGF V1.0;\ngrammar voxtra;\npublic <utterance> = ( {' | '.join(alternatives)} ) ;\n"


async def hear_answer(samples: npt.ArrayLike, rate: int, answers: Sequence[str]) -> Heard:
    """Which of ``answers`` a stretch of a call's audio (say, what a SIP phone
    recorded) is, recognised by pocketsphinx (the ``local`` extra).

    A grammar of the answers with every word optional: the words heard are always
    some of one answer's, in order, and the ``score`` says how much of it. With each
    answer a fixed sentence (pocketsphinx's ``grammar=``) a recording was heard in full
    or as nothing: a phone's clear "We are open Monday to Friday..." was "" from one
    cut and whole from a cut 0.15 s earlier, and "" with three 20 ms holes in it. This
    grammar heard 14 of its 15 words from every cut, and 10 to 14 with up to six holes
    of 20-120 ms (score 0.77-0.97); three seconds of noise were "a" (0.18).
    """
    _check_rate(rate)
    from voxtra.media.frames import AudioChunk, Codec
    from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT

    pcm = np.asarray(samples, dtype=np.int16)
    stt = PocketSphinxSTT(jsgf=answers_jsgf(answers), executor="thread")
    try:
        stream = await stt.stream()
        await stream.send(AudioChunk(pcm.astype("<i2").tobytes(), rate, Codec.PCM16))
        await stream.close()
        text = " ".join([t.text async for t in stream.transcripts()]).strip()
    finally:
        await stt.aclose()
    words = _spoken_words(text)
    if not words:
        return Heard(None, "", 0.0)
    scores = {a: difflib.SequenceMatcher(None, words, _spoken_words(a)).ratio() for a in answers}
    best = max(scores, key=lambda a: scores[a])
    return Heard(best, " ".join(words), scores[best])
