"""Offline speech recognition with pocketsphinx (BSD; model inside the wheel, no downloads).

Measured here (notes/speech.md): on 8 kHz telephone audio, pocketsphinx's *streaming*
mode collapses (live cepstral normalisation starts from a wideband prior), and open
vocabulary recognition is poor (27-91% WER), while a JSGF grammar or keyword list gets
0-15% WER. So this provider:

- takes 16 kHz PCM16 (``sample_rate``: what the voice pipeline delivers) and converts
  anything else to it (G.711, 8 kHz: one ``ChunkConverter`` per stream);
- buffers each utterance and decodes it whole (``full_utt=True``) when the pipeline's VAD
  calls ``end_of_speech()`` (or the stream closes): finals only, no partials;
- decodes in worker *processes*: pocketsphinx holds the GIL while it searches (measured:
  a 5 s open-vocabulary utterance froze the event loop for 1 s when decoded in a thread;
  grammar mode for 15-80 ms), so a thread would stall every call's media;
- recognises against ``grammar`` (whole phrases), ``keywords`` (any sequence of the
  given words/phrases) or a raw ``jsgf`` grammar, or open vocabulary when none is given.

Utterances are decoded independently (per-utterance normalisation), so decoders hold no
per-call state and any worker can serve any call: the provider runs ``workers`` processes
(default 1), each building its decoder once on first use (~96 MB and 0.25 s with the
language model, ~30 MB and 0.1 s grammar-only). Streams only hold their audio buffer.
``executor="thread"`` keeps decoding in-process (cheaper for a single call or in tests,
at the cost of the event-loop stalls above).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from voxtra.errors import ConfigError, ProviderError
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers._utterances import UtteranceQueue
from voxtra.providers.base import Transcript

__all__ = ["PocketSphinxSTT", "PocketSphinxStream"]

logger = logging.getLogger(__name__)

_RATE = 16000
_PAD = bytes(int(_RATE * 0.3) * 2)  # 300 ms of silence around each utterance helps CMN
_DITHER_SEED = 20261130


def _dither(pcm: bytes) -> bytes:
    """``pcm`` plus +-1 LSB of triangular noise, the same noise for every utterance.

    The caller's audio must not reach pocketsphinx as digital silence (exact zeros)
    around the words: on it the decoder loses an utterance's last word far more often.
    That is why swapping the providers' soxr converter for the streaming FIR made it
    "drop final words": libsoxr dithers int16 output by default, so the old converter
    had put this noise on every sample, and the FIR (an exact resampler) does not.
    Measured on 224 espeak utterances through 8 kHz u-law (14 phrases x 16 offsets),
    last word missing: soxr as before 53-59, soxr undithered 72, the FIR 80, the FIR
    and this noise 60 (WER 22-24% throughout: the noise trades a lost last word for
    an inserted short one, which keyword intents tolerate; a lost "berlin" is not).
    Only the speech gets it: noise on ``_PAD`` as well made it 106 (WER 41%). Seeded,
    so one utterance always decodes the same, whichever worker decodes it.
    """
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    rng = np.random.default_rng(_DITHER_SEED)
    x += rng.integers(0, 2, len(x), dtype=np.int32) - rng.integers(0, 2, len(x), dtype=np.int32)
    np.clip(x, -32768, 32767, out=x)
    return x.astype("<i2").tobytes()


_MIN_UTTERANCE_S = 0.1
_SEARCH = "voxtra"
_EXTRA_HINT = "pip install 'voxtra[local]'"


def _words(phrase: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", phrase.lower())


def _keywords_jsgf(items: Sequence[str], *, loop: bool) -> str:
    alts = sorted({" ".join(_words(p)) for p in items if _words(p)})
    if not alts:
        raise ConfigError("PocketSphinxSTT grammar/keywords must contain at least one word")
    body = " | ".join(alts)
    rule = f"( {body} )+" if loop else f"( {body} )"
    return f"#JSGF V1.0;\ngrammar voxtra;\npublic <utterance> = {rule} ;\n"


_local = threading.local()


class _Recognizer:
    """A decoder whose front end is reset before every utterance, so a result never
    depends on which call's audio the decoder heard before."""

    def __init__(self, jsgf: str | None, options: dict[str, Any], vocabulary: list[str]):
        from pocketsphinx import Decoder

        if jsgf is None:
            self.decoder = Decoder(**options)
        else:
            self.decoder = Decoder(lm=None, **options)
            unknown = sorted({w for w in vocabulary if self.decoder.lookup_word(w) is None})
            if unknown:
                raise LookupError(f"words not in the pocketsphinx dictionary: {unknown}")
            self.decoder.add_jsgf_string(_SEARCH, jsgf)
            self.decoder.activate_search(_SEARCH)

    def decode(self, pcm16k: bytes) -> tuple[str, float | None]:
        """Decode one whole utterance (blocking, holds the GIL throughout)."""
        if not pcm16k:
            return "", None
        d = self.decoder
        # Restoring the cepstral mean alone was not enough: the front end's noise
        # estimate (remove_noise, on by default) carries over from utterance to
        # utterance, so the same audio got another confidence (0.0437 fresh, 0.0438
        # after itself; open vocabulary drifted on every decode) depending on what the
        # worker decoded before. reinit_feat() rebuilds the front end and the features,
        # cepstral mean included, in 0.1 ms; results then equal a fresh decoder's.
        d.reinit_feat()
        d.start_utt()
        d.process_raw(_PAD + _dither(pcm16k) + _PAD, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        if hyp is None:
            return "", None
        prob = float(hyp.prob)
        return hyp.hypstr.strip(), prob if 0.0 <= prob <= 1.0 else None


def _thread_decode(
    jsgf: str | None, options: dict[str, Any], vocabulary: list[str], pcm16k: bytes
) -> tuple[str, float | None]:
    """Decode in a worker thread with that thread's own decoder (built on first use)."""
    key = (jsgf, tuple(sorted(options.items())))
    cache: dict[Any, _Recognizer] = _local.__dict__.setdefault("recognizers", {})
    recognizer = cache.get(key)
    if recognizer is None:
        recognizer = cache[key] = _Recognizer(jsgf, options, vocabulary)
    return recognizer.decode(pcm16k)


class _Worker:
    """One decoder subprocess (see ``_sphinx_worker``); serves one utterance at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, config: dict[str, Any], timeout: float) -> _Worker:
        """Start a worker and wait up to ``timeout`` s for it to build its decoder."""
        # The child must import the same voxtra as this process, installed or not.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "voxtra.providers._sphinx_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = cls(proc)
        try:
            worker._write(json.dumps(config).encode() + b"\n")
            # Without a deadline a worker that never got ready (reproduced: a decoder
            # dictionary that is a FIFO nobody writes to) held warm_up(), or the first
            # utterance and its slot, for good.
            async with asyncio.timeout(timeout):
                await worker._answer()
        except TimeoutError:
            await worker.stop(kill=True)
            raise ProviderError(
                "pocketsphinx", f"decoder process hung at start (not ready in {timeout:.1f} s)"
            ) from None
        except BaseException:
            await worker.stop()
            raise
        return worker

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    async def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise ProviderError("pocketsphinx", "decoder process died")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            if answer.get("kind") == "config":
                raise ConfigError(f"PocketSphinxSTT: {answer['error']}")
            raise ProviderError("pocketsphinx", f"decoding failed: {answer['error']}")
        return answer

    async def decode(self, pcm16k: bytes) -> tuple[str, float | None]:
        assert self.proc.stdin is not None
        self._write(len(pcm16k).to_bytes(4, "big") + pcm16k)
        try:
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise ProviderError("pocketsphinx", "decoder process died") from exc
        answer = await self._answer()
        return str(answer["text"]), answer["prob"]

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, *, kill: bool = False) -> None:
        """End the process: on EOF it finishes the utterance it is decoding, answers and
        exits (killed if it has not within 2 s); ``kill`` ends one that is no use now."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        if kill and self.alive:
            self.proc.kill()
        try:
            await asyncio.wait_for(self.proc.wait(), 2.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class PocketSphinxSTT:
    """Offline STT. Pass at most one of ``grammar`` (the caller says one of these phrases),
    ``keywords`` (any sequence of these words or phrases: best for intent agents) or
    ``jsgf`` (a full JSGF grammar text); none of them means open vocabulary.

    ``workers`` decoder subprocesses serve all calls, started on first use or by
    ``warm_up()`` (``executor="thread"`` decodes in in-process threads instead).
    ``max_utterance_s`` bounds the buffer if the VAD never calls ``end_of_speech``.
    A worker that has not answered an utterance within ``decode_timeout_s`` plus the
    utterance's length is hung: it is killed, that utterance fails (``ProviderError``:
    the pipeline speaks its fallback line) and a new worker takes the next one. One not
    ready within ``start_timeout_s`` of its start is killed too, and the start fails
    (``ProviderError``, from ``warm_up()`` or the utterance that needed it).
    Call ``aclose()`` to stop the workers (they also end when this process does)."""

    name = "pocketsphinx"
    sample_rate = _RATE
    """The rate the decoder works at: the voice pipeline hands every frame over at it."""

    def __init__(
        self,
        grammar: Sequence[str] | None = None,
        keywords: Sequence[str] | None = None,
        jsgf: str | None = None,
        *,
        workers: int = 1,
        executor: str = "process",
        max_utterance_s: float = 30.0,
        decode_timeout_s: float = 5.0,
        start_timeout_s: float = 30.0,
        decoder_options: dict[str, Any] | None = None,
    ) -> None:
        given = [x for x in (grammar, keywords, jsgf) if x is not None]
        if len(given) > 1:
            raise ConfigError("PocketSphinxSTT takes only one of grammar, keywords, jsgf")
        if isinstance(grammar, str) or isinstance(keywords, str):
            raise ConfigError("PocketSphinxSTT grammar/keywords are lists of phrases, not str")
        if executor not in ("process", "thread"):
            raise ConfigError("PocketSphinxSTT executor must be 'process' or 'thread'")
        if workers < 1:
            raise ConfigError("PocketSphinxSTT needs at least one worker")
        if decode_timeout_s <= 0 or start_timeout_s <= 0:
            raise ConfigError(
                "PocketSphinxSTT decode_timeout_s and start_timeout_s must be positive"
            )
        if importlib.util.find_spec("pocketsphinx") is None:
            # Checked here, not left to the decoder: the worker process only said
            # "decoding failed: ModuleNotFoundError" when the first call's stream opened,
            # and executor="thread" raised the bare ImportError there.
            raise ConfigError(f"PocketSphinxSTT needs the local extra: {_EXTRA_HINT}")
        self._jsgf: str | None
        if grammar is not None:
            self._jsgf = _keywords_jsgf(grammar, loop=False)
        elif keywords is not None:
            self._jsgf = _keywords_jsgf(keywords, loop=True)
        else:
            self._jsgf = jsgf
        self._vocabulary = [w for p in (grammar or keywords or ()) for w in _words(p)]
        self.workers = workers
        self.executor = executor
        self.max_utterance_s = max_utterance_s
        self.decode_timeout_s = decode_timeout_s
        """Allowed on top of an utterance's own length (s) before its worker counts as
        hung. Decoding takes 0.02-0.4 of the utterance's length (notes/speech.md): a 30
        s utterance at 0.4 needs 12 s of the 35 s this allows."""
        self.start_timeout_s = start_timeout_s
        """Allowed for a worker to start and build its decoder (s) before it counts as
        hung. Measured here (2 cores, shared): 1.5-3.2 s for one (most of it importing
        voxtra), 7.2 s each for four started at once."""
        self._options: dict[str, Any] = {"loglevel": "FATAL", **(decoder_options or {})}
        self._threads: ThreadPoolExecutor | None = None
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        """Every worker this provider started and has not stopped, idle or decoding."""
        self._started = 0
        self._slots: asyncio.Semaphore | None = None
        self._ready = False

    @property
    def mode(self) -> str:
        return "grammar" if self._jsgf is not None else "open-vocabulary"

    def _config(self) -> dict[str, Any]:
        return {"jsgf": self._jsgf, "options": self._options, "vocabulary": self._vocabulary}

    async def decode(self, pcm16k: bytes) -> tuple[str, float | None]:
        """Decode one whole utterance of 16 kHz PCM16 in a worker; an empty buffer only
        makes sure a worker (and its decoder) is up."""
        if self.executor == "thread":
            return await self._decode_in_thread(pcm16k)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start_worker()
            try:
                result = await self._decode_on(worker, pcm16k) if pcm16k else ("", None)
            except BaseException:
                self._workers.discard(worker)
                await worker.stop(kill=True)  # a worker in an unknown state is not reused
                raise
            if worker in self._workers:  # else aclose() stopped it while it decoded
                self._idle.append(worker)
            return result

    async def _start_worker(self) -> _Worker:
        worker = await _Worker.start(self._config(), self.start_timeout_s)
        self._workers.add(worker)
        return worker

    async def _decode_on(self, worker: _Worker, pcm16k: bytes) -> tuple[str, float | None]:
        # Without a deadline a hung worker held its slot for good: with the default one
        # worker, every later utterance of every call waited behind it (reproduced by
        # stopping the worker with SIGSTOP: the next utterance never decoded).
        seconds = self.decode_timeout_s + len(pcm16k) / 2 / _RATE
        try:
            async with asyncio.timeout(seconds):
                return await worker.decode(pcm16k)
        except TimeoutError:
            raise ProviderError(
                self.name, f"decoder process hung (no answer in {seconds:.1f} s); replaced"
            ) from None

    async def _decode_in_thread(self, pcm16k: bytes) -> tuple[str, float | None]:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="pocketsphinx")
        loop = asyncio.get_running_loop()
        call = partial(_thread_decode, self._jsgf, self._options, self._vocabulary, pcm16k)
        try:
            return await loop.run_in_executor(self._threads, call)
        except LookupError as exc:
            raise ConfigError(f"PocketSphinxSTT: {exc}") from exc
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(self.name, f"decoding failed: {exc}") from exc

    async def warm_up(self) -> None:
        """Start every worker and build its decoder now, so the first call is not slow
        and a bad grammar fails here (``ConfigError``) rather than mid-call."""
        if self.executor == "thread":
            await self._decode_in_thread(b"")
        else:
            while len(self._idle) < self.workers:
                self._idle.append(await self._start_worker())
        self._ready = True

    async def stream(self) -> PocketSphinxStream:
        if not self._ready:
            await self.decode(b"")  # validates the grammar before the call relies on it
            self._ready = True
        return PocketSphinxStream(self)

    async def aclose(self) -> None:
        """Stop the decoder workers, those decoding too: each finishes its utterance
        first (idempotent; the provider restarts them if used again)."""
        # Only the idle ones were stopped: a worker busy at aclose() went back to the
        # idle list when its utterance was done and lived on (reproduced: closing the
        # provider during a decode left its process running).
        workers, self._workers, self._idle = self._workers, set(), []
        await asyncio.gather(*(w.stop() for w in workers))
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
        self._ready = False


class PocketSphinxStream:
    """One call's recognition stream: buffers an utterance, decodes it on end of speech."""

    def __init__(self, provider: PocketSphinxSTT) -> None:
        self._provider = provider
        self._converter = ChunkConverter(Codec.PCM16, _RATE)
        self._buffer = bytearray()
        self._buffer_start = 0  # samples (16 kHz) from stream start
        self._utterances = UtteranceQueue[tuple[bytes, int]](provider.name, self._decode)
        self._closed = False

    async def send(self, chunk: AudioChunk) -> None:
        if self._closed:
            raise ProviderError(self._provider.name, "stream is closed")
        self._buffer += self._converter.convert(chunk).data
        if len(self._buffer) >= self._provider.max_utterance_s * _RATE * 2:
            self._cut()

    async def end_of_speech(self) -> None:
        """Decode what was heard since the last cut (in the background; results follow
        in ``transcripts()`` in order)."""
        self._buffer += self._converter.flush().data  # the resampler's tail belongs here
        self._cut()

    def _cut(self) -> None:
        if len(self._buffer) >= _MIN_UTTERANCE_S * _RATE * 2:
            self._utterances.put((bytes(self._buffer), self._buffer_start))
        self._buffer_start += len(self._buffer) // 2
        self._buffer.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer += self._converter.flush().data
        self._cut()
        await self._utterances.finish()

    async def _decode(self, utterance: tuple[bytes, int]) -> Transcript | None:
        pcm, start = utterance
        text, conf = await self._provider.decode(pcm)
        if not text:
            return None
        t0 = start / _RATE
        return Transcript(text, True, conf, t0, t0 + len(pcm) / 2 / _RATE)

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._utterances.transcripts()
