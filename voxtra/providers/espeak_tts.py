"""espeak-ng text to speech through ``espeakng-loader`` and ctypes: offline, instant, robotic.

License: libespeak-ng is GPL-3.0-or-later, so this provider lives in the ``espeak`` extra
(``pip install voxtra[espeak]``); the core install stays permissive.

espeak-ng is a process-wide singleton (one global voice, one global callback), so every
synthesis holds a module lock while it runs, in a worker thread so the event loop never
blocks. It runs ~1000x faster than real time, so the lock is held for milliseconds. Audio
is handed over as espeak produces it (every ``_BUFFER_MS``), so first audio is immediate.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec

__all__ = ["EspeakTTS"]

logger = logging.getLogger(__name__)

# Constants of espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAMS = (_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH)
"""The parameters an ``EspeakTTS`` sets: every synthesis sets all of them."""
_EE_OK = 0
_BUFFER_MS = 60
_EXTRA_HINT = "pip install 'voxtra[espeak]'"

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(eq=False)
class _Job:
    """One synthesis: where its audio goes, and whether its consumer has gone."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | None]
    cancelled: bool = False
    produced: int = field(default=0)

    def put(self, item: bytes | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class _Engine:
    """The process's one espeak-ng instance, loaded on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self._defaults: dict[int, int] = {}
        self._job: _Job | None = None
        # Keep the ctypes callback object alive for the life of the process.
        self._callback = _Callback(self._on_audio)

    def _load(self) -> ctypes.CDLL:
        if self._lib is not None:
            return self._lib
        try:
            import espeakng_loader
        except ImportError as exc:
            raise ConfigError(f"EspeakTTS needs the espeak extra: {_EXTRA_HINT}") from exc
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:
            raise ProviderError("espeak", f"cannot load libespeak-ng: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
        if rate <= 0:
            raise ProviderError("espeak", f"espeak_Initialize failed ({rate})")
        lib.espeak_SetSynthCallback(self._callback)
        self._defaults = {param: lib.espeak_GetParameter(param, 0) for param in _PARAMS}
        self.sample_rate = rate
        self._lib = lib
        return lib

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
        job = self._job
        if job is None:
            return 1
        if job.cancelled:
            return 1  # tells espeak to abort this synthesis
        if wav and n > 0:
            job.produced += n
            job.put(ctypes.string_at(wav, n * 2))
        return 0

    def synth(self, job: _Job, text: str, voice: str, params: dict[int, int]) -> None:
        """Synthesize ``text`` into ``job`` (worker thread); always ends the job's queue."""
        try:
            with self.lock:
                lib = self._load()
                if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    raise ProviderError("espeak", f"unknown voice {voice!r}")
                # espeak keeps a parameter until it is set again, so one left out took the
                # last synthesis's value: after EspeakTTS(volume=20) had spoken, a plain
                # EspeakTTS() spoke at a quarter of its RMS. Every one is set every time.
                for param, default in self._defaults.items():
                    lib.espeak_SetParameter(param, params.get(param, default), 0)
                raw = text.encode("utf-8") + b"\0"
                self._job = job
                try:
                    err = lib.espeak_Synth(
                        raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                    )
                finally:
                    self._job = None
                if err != _EE_OK and not job.cancelled:
                    raise ProviderError("espeak", f"espeak_Synth failed ({err})")
        finally:
            job.put(None)


_engine = _Engine()


class EspeakTTS:
    """Offline TTS: PCM16 at 22,050 Hz, streamed in ~60 ms pieces as espeak produces them.

    ``rate`` is words per minute (espeak's default is 175; 150 is easier to recognise on
    a phone line), ``pitch`` and ``volume`` 0-100 / 0-200 as espeak defines them.
    """

    name = "espeak"
    sample_rate = 22050

    def __init__(
        self,
        voice: str = "en-us",
        rate: int = 160,
        pitch: int | None = None,
        volume: int | None = None,
    ) -> None:
        if not 80 <= rate <= 450:
            raise ConfigError(f"EspeakTTS rate must be 80..450 words per minute, not {rate}")
        if importlib.util.find_spec("espeakng_loader") is None:
            # Here, not at the first synthesis: that is mid-call, the caller's first answer.
            raise ConfigError(f"EspeakTTS needs the espeak extra: {_EXTRA_HINT}")
        self.voice = voice
        self._params = {_PARAM_RATE: rate}
        if pitch is not None:
            self._params[_PARAM_PITCH] = pitch
        if volume is not None:
            self._params[_PARAM_VOLUME] = volume

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Stream speech for ``text``; closing the iterator aborts espeak mid-sentence."""
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        job = _Job(loop, asyncio.Queue())
        worker = asyncio.ensure_future(
            asyncio.to_thread(_engine.synth, job, text, self.voice, self._params)
        )
        try:
            while (data := await job.queue.get()) is not None:
                yield AudioChunk(data, _engine.sample_rate or self.sample_rate, Codec.PCM16)
            await worker  # re-raises a ProviderError from the thread
        finally:
            job.cancelled = True
            if not worker.done():
                # The callback aborts espeak at its next buffer; don't leave the error unread.
                worker.add_done_callback(_drain)


def _drain(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.debug("espeak synthesis ended with %r after its consumer left", fut.exception())
