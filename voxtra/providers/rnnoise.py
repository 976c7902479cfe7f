"""Noise suppression of the caller's line with RNNoise, for the STT (off by default).

RNNoise (Xiph, BSD-3) is a small recurrent network that removes stationary noise from
speech, 10 ms at a time at 48 kHz. It comes compiled inside the ``pyrnnoise`` wheel
(``pip install 'voxtra[rnnoise]'``: nothing is built, the model is in the library);
Voxtra loads that library with ctypes itself and does not import pyrnnoise's Python
side (its file-processing helpers pull in audiolab and matplotlib).

Use it by wrapping the STT: ``DenoisedSTT(WhisperSTT())`` hears each call's audio
through its own suppressor; the VAD and the turn detector keep the line as it is.
Measured with ``bench/stt_offline.py --denoise`` (Whisper tiny.en, 60 utterances of
8 kHz u-law per condition, 2 cores shared with other work): on the noisy line (white
noise 20 dB under the speech plus hum) WER 36.7% -> 31.1% and right answers 73% ->
75%; on the clean line it *hurts*: WER 24.2% -> 32.8%, right answers 83% -> 73%
(the network, trained on wideband speech, eats parts of band-limited robotic
voices). Hence off by default: turn it on for lines known to be noisy. Its cost, the
resampling to 48 kHz and back included: 23-25 ms of CPU per call-second measured on a
loaded box (2.3-2.5% of a core per caller). The resamplers are the "VHQ" ones: with
"HQ" the noisy line's WER only went to 35.6% (images of the 8 kHz band above 4 kHz
left in the 48 kHz signal, which RNNoise then judges).
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from voxtra.errors import ConfigError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.resample import StreamResampler
from voxtra.providers.base import STT, STTStream, Transcript

__all__ = ["DenoisedSTT", "RNNoise", "RNNoiseSession"]

_RATE = 48000
_EXTRA_HINT = "pip install 'voxtra[rnnoise]'"


def _library_path() -> Path:
    """librnnoise.so inside the installed pyrnnoise package (its __init__ not run)."""
    spec = importlib.util.find_spec("pyrnnoise")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "librnnoise.so"
        if path.is_file():
            return path
    raise ConfigError(f"RNNoise needs the rnnoise extra (no librnnoise.so): {_EXTRA_HINT}")


_lib: Any = None


def _load() -> Any:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(str(_library_path()))
        except OSError as exc:
            raise ConfigError(f"RNNoise cannot load its library: {exc}") from exc
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_destroy.restype = None
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_get_frame_size.restype = ctypes.c_int
        lib.rnnoise_get_frame_size.argtypes = []
        floats = ctypes.POINTER(ctypes.c_float)
        lib.rnnoise_process_frame.restype = ctypes.c_float
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
        _lib = lib
    return _lib


class RNNoiseSession:
    """One call's suppressor (RNNoise keeps state across frames: never share it).

    ``process`` takes a frame at any rate and codec and returns PCM16 at the same rate,
    delayed by the resamplers and RNNoise's 10 ms frame (the first frames come out
    shorter; the sum follows the input)."""

    def __init__(self) -> None:
        self._lib = _load()
        self._frame = int(self._lib.rnnoise_get_frame_size())
        self._state: int | None = self._lib.rnnoise_create(None)
        self._rate = 0
        self._up: Any = None
        self._down: Any = None
        self._pending = np.zeros(0, dtype=np.float32)
        self.speech_probability = 0.0
        """RNNoise's voice activity estimate for the last 10 ms it processed."""

    def process(self, chunk: AudioChunk) -> AudioChunk:
        if self._state is None:
            raise ConfigError("RNNoiseSession is closed")
        rate = chunk.sample_rate
        if rate != self._rate:
            self._rate = rate
            # Voxtra's streaming FIR, not libsoxr's stream: soxr holds its output back in
            # blocks (8 kHz -> 48 kHz and back: 273 ms behind, measured), ours by half
            # its filter
            self._up = StreamResampler(rate, _RATE, "VHQ")
            self._down = StreamResampler(_RATE, rate, "VHQ")
            self._pending = np.zeros(0, dtype=np.float32)
        pcm = g711.decode(chunk.data, chunk.codec)
        x = np.frombuffer(self._up.process(pcm), dtype="<i2").astype(np.float32)
        wide = np.concatenate([self._pending, x])
        whole = len(wide) // self._frame * self._frame
        self._pending = wide[whole:].copy()
        out = np.ascontiguousarray(wide[:whole])
        pointer = ctypes.POINTER(ctypes.c_float)
        for start in range(0, whole, self._frame):
            # RNNoise works on float samples at int16 scale, in place
            view = out[start : start + self._frame].ctypes.data_as(pointer)
            self.speech_probability = float(
                self._lib.rnnoise_process_frame(self._state, view, view)
            )
        wide16 = np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()
        return AudioChunk(self._down.process(wide16), rate, Codec.PCM16)

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


class RNNoise:
    """Factory of per-call RNNoise suppressors (``session()``)."""

    name = "rnnoise"

    def __init__(self) -> None:
        _load()  # fail now, with the extra's name, not mid-call

    def session(self) -> RNNoiseSession:
        return RNNoiseSession()


class _DenoisedStream:
    def __init__(self, inner: STTStream, session: RNNoiseSession) -> None:
        self._inner = inner
        self._session = session

    async def send(self, chunk: AudioChunk) -> None:
        cleaned = self._session.process(chunk)
        if cleaned.data:
            await self._inner.send(cleaned)

    async def end_of_speech(self) -> None:
        await self._inner.end_of_speech()

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            self._session.close()

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._inner.transcripts()


class DenoisedSTT:
    """``stt`` hearing each call's audio through its own RNNoise suppressor.

    ``name``, ``sample_rate`` and ``batch_ms`` are the wrapped STT's, so the pipeline
    hands over the same frames as without it; ``warm_up()`` and ``aclose()`` pass on."""

    def __init__(self, stt: STT, suppressor: RNNoise | None = None) -> None:
        self.stt = stt
        self.suppressor = suppressor or RNNoise()
        self.name = stt.name
        for attribute in ("sample_rate", "batch_ms"):
            if hasattr(stt, attribute):
                setattr(self, attribute, getattr(stt, attribute))

    async def stream(self) -> STTStream:
        return _DenoisedStream(await self.stt.stream(), self.suppressor.session())

    async def warm_up(self) -> None:
        warm = getattr(self.stt, "warm_up", None)
        if warm is not None:
            await warm()

    async def aclose(self) -> None:
        close = getattr(self.stt, "aclose", None)
        if close is not None:
            await close()
