"""Offline speech recognition with pocketsphinx (BSD; model inside the wheel, no downloads).

Measured here (notes/speech.md): on 8 kHz telephone audio, pocketsphinx's *streaming*
mode collapses (live cepstral normalisation starts from a wideband prior), and open
vocabulary recognition is poor (27-91% WER), while a JSGF grammar or keyword list gets
0-15% WER. So this provider:

- upsamples everything to the model's 16 kHz (one soxr stream per call);
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
import logging
import multiprocessing
import re
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers._audio import Converter
from voxtra.providers.base import Transcript

__all__ = ["PocketSphinxSTT", "PocketSphinxStream"]

logger = logging.getLogger(__name__)

_RATE = 16000
_PAD = bytes(int(_RATE * 0.3) * 2)  # 300 ms of silence around each utterance helps CMN
_MIN_UTTERANCE_S = 0.1
_SEARCH = "voxtra"


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


def _build_decoder(jsgf: str | None, options: dict[str, Any], vocabulary: list[str]) -> Any:
    from pocketsphinx import Decoder

    if jsgf is None:
        return Decoder(**options)
    decoder = Decoder(lm=None, **options)
    unknown = sorted({w for w in vocabulary if decoder.lookup_word(w) is None})
    if unknown:
        raise LookupError(f"words not in the pocketsphinx dictionary: {unknown}")
    decoder.add_jsgf_string(_SEARCH, jsgf)
    decoder.activate_search(_SEARCH)
    return decoder


def _worker_decode(
    jsgf: str | None, options: dict[str, Any], vocabulary: list[str], pcm16k: bytes
) -> tuple[str, float | None]:
    """Decode one utterance in a worker (process or thread), building its decoder once.

    Runs in another process: it raises only plain, picklable exceptions."""
    key = (jsgf, tuple(sorted(options.items())))
    cache: dict[Any, Any] = _local.__dict__.setdefault("decoders", {})
    decoder = cache.get(key)
    if decoder is None:
        decoder = cache[key] = _build_decoder(jsgf, options, vocabulary)
    if not pcm16k:
        return "", None
    decoder.start_utt()
    decoder.process_raw(_PAD + pcm16k + _PAD, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is None:
        return "", None
    prob = float(hyp.prob)
    return hyp.hypstr.strip(), prob if 0.0 <= prob <= 1.0 else None


class PocketSphinxSTT:
    """Offline STT. Pass at most one of ``grammar`` (the caller says one of these phrases),
    ``keywords`` (any sequence of these words or phrases: best for intent agents) or
    ``jsgf`` (a full JSGF grammar text); none of them means open vocabulary.

    ``workers`` decoder processes serve all calls (``executor="thread"`` for in-process
    threads). ``max_utterance_s`` bounds the buffer if the VAD never calls
    ``end_of_speech``. Call ``aclose()`` to stop the workers (they also stop at exit)."""

    name = "pocketsphinx"

    def __init__(
        self,
        grammar: Sequence[str] | None = None,
        keywords: Sequence[str] | None = None,
        jsgf: str | None = None,
        *,
        workers: int = 1,
        executor: str = "process",
        max_utterance_s: float = 30.0,
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
        self._options: dict[str, Any] = {"loglevel": "FATAL", **(decoder_options or {})}
        self._pool: Executor | None = None
        self._ready = False

    @property
    def mode(self) -> str:
        return "grammar" if self._jsgf is not None else "open-vocabulary"

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.executor == "thread":
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pocketsphinx")
            else:
                # spawn, not fork: forking a process that runs an event loop and threads
                # copies locks in unknown states.
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool

    async def decode(self, pcm16k: bytes) -> tuple[str, float | None]:
        """Decode one whole utterance of 16 kHz PCM16 in a worker."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor(),
                _worker_decode,
                self._jsgf,
                self._options,
                self._vocabulary,
                pcm16k,
            )
        except LookupError as exc:
            raise ConfigError(f"PocketSphinxSTT: {exc}") from exc
        except BrokenProcessPool as exc:
            self._pool = None  # the next utterance starts fresh workers
            raise ProviderError(self.name, "decoder process died") from exc
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(self.name, f"decoding failed: {exc}") from exc

    async def warm_up(self) -> None:
        """Start the workers and build their decoders now, so the first call is not slow
        and a bad grammar fails here (``ConfigError``) rather than mid-call."""
        await asyncio.gather(*(self.decode(b"") for _ in range(self.workers)))
        self._ready = True

    async def stream(self) -> PocketSphinxStream:
        if not self._ready:
            await self.decode(b"")  # validates the grammar before the call relies on it
            self._ready = True
        return PocketSphinxStream(self)

    async def aclose(self) -> None:
        """Stop the decoder workers."""
        pool, self._pool = self._pool, None
        self._ready = False
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)


class PocketSphinxStream:
    """One call's recognition stream: buffers an utterance, decodes it on end of speech."""

    def __init__(self, provider: PocketSphinxSTT) -> None:
        self._provider = provider
        self._converter = Converter(Codec.PCM16, _RATE)
        self._buffer = bytearray()
        self._buffer_start = 0  # samples (16 kHz) from stream start
        self._position = 0
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._work: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())
        self._closed = False

    async def send(self, chunk: AudioChunk) -> None:
        if self._closed:
            raise ProviderError(self._provider.name, "stream is closed")
        pcm = self._converter.convert(chunk)
        self._buffer += pcm
        self._position += len(pcm) // 2
        if len(self._buffer) >= self._provider.max_utterance_s * _RATE * 2:
            self._cut()

    async def end_of_speech(self) -> None:
        self._cut()

    def _cut(self) -> None:
        if len(self._buffer) >= _MIN_UTTERANCE_S * _RATE * 2:
            self._work.put_nowait((bytes(self._buffer), self._buffer_start))
        self._buffer.clear()
        self._buffer_start = self._position

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer += self._converter.flush()
        self._cut()
        self._work.put_nowait(None)
        await asyncio.shield(self._worker)

    async def _run(self) -> None:
        try:
            while (item := await self._work.get()) is not None:
                pcm, start = item
                text, conf = await self._provider.decode(pcm)
                if text:
                    t0 = start / _RATE
                    end = t0 + len(pcm) / 2 / _RATE
                    self._out.put_nowait(Transcript(text, True, conf, t0, end))
        except Exception as exc:  # reported to the reader, never lost in a task
            if not isinstance(exc, ProviderError | ConfigError):
                exc = ProviderError(self._provider.name, f"{type(exc).__name__}: {exc}")
            self._out.put_nowait(exc)
        finally:
            self._out.put_nowait(None)

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (item := await self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
