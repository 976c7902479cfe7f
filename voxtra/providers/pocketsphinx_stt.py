"""Offline speech recognition with pocketsphinx (BSD; model inside the wheel, no downloads).

Measured here (notes/speech.md): on 8 kHz telephone audio, pocketsphinx's *streaming*
mode collapses (live cepstral normalisation starts from a wideband prior), and open
vocabulary recognition is poor (27-91% WER), while a JSGF grammar or keyword list gets
0-15% WER. So this provider:

- upsamples everything to the model's 16 kHz (one soxr stream per call);
- buffers each utterance and decodes it whole (``full_utt=True``) when the pipeline's VAD
  calls ``end_of_speech()`` (or the stream closes): finals only, no partials;
- decodes in a worker thread, so the event loop never blocks;
- recognises against ``grammar`` (whole phrases), ``keywords`` (any sequence of the
  given words/phrases) or a raw ``jsgf`` grammar, or open vocabulary when none is given.

A decoder costs ~96 MB with the language model (~30 MB grammar-only) and 0.1-0.25 s to
build, so the provider keeps a small pool of idle decoders: each stream borrows one for
its lifetime (a decoder holds per-utterance state, so two calls never share one) and
returns it on close.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Sequence
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


class PocketSphinxSTT:
    """Offline STT. Pass at most one of ``grammar`` (the caller says one of these phrases),
    ``keywords`` (any sequence of these words or phrases: best for intent agents) or
    ``jsgf`` (a full JSGF grammar text); none of them means open vocabulary.
    ``max_utterance_s`` bounds the buffer if the VAD never calls ``end_of_speech``."""

    name = "pocketsphinx"

    def __init__(
        self,
        grammar: Sequence[str] | None = None,
        keywords: Sequence[str] | None = None,
        jsgf: str | None = None,
        *,
        pool_size: int = 2,
        max_utterance_s: float = 30.0,
        decoder_options: dict[str, Any] | None = None,
    ) -> None:
        given = [x for x in (grammar, keywords, jsgf) if x is not None]
        if len(given) > 1:
            raise ConfigError("PocketSphinxSTT takes only one of grammar, keywords, jsgf")
        if isinstance(grammar, str) or isinstance(keywords, str):
            raise ConfigError("PocketSphinxSTT grammar/keywords are lists of phrases, not str")
        self._jsgf: str | None
        if grammar is not None:
            self._jsgf = _keywords_jsgf(grammar, loop=False)
        elif keywords is not None:
            self._jsgf = _keywords_jsgf(keywords, loop=True)
        else:
            self._jsgf = jsgf
        self._vocabulary = [w for p in (grammar or keywords or ()) for w in _words(p)]
        self.pool_size = pool_size
        self.max_utterance_s = max_utterance_s
        self._options = {"loglevel": "FATAL", **(decoder_options or {})}
        self._pool: list[Any] = []
        self._pool_lock = threading.Lock()
        self._checked = False

    @property
    def mode(self) -> str:
        return "grammar" if self._jsgf is not None else "open-vocabulary"

    def _new_decoder(self) -> Any:
        """Build a decoder (worker thread). Grammar mode skips the 60 MB language model."""
        from pocketsphinx import Decoder

        try:
            if self._jsgf is None:
                return Decoder(**self._options)
            decoder = Decoder(lm=None, **self._options)
            if not self._checked:
                unknown = [w for w in self._vocabulary if decoder.lookup_word(w) is None]
                if unknown:
                    raise ConfigError(
                        f"PocketSphinxSTT: words not in the dictionary: {sorted(set(unknown))}"
                    )
                self._checked = True
            decoder.add_jsgf_string(_SEARCH, self._jsgf)
            decoder.activate_search(_SEARCH)
            return decoder
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ProviderError(self.name, f"cannot create decoder: {exc}") from exc

    def _acquire(self) -> Any:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        return self._new_decoder()

    def _release(self, decoder: Any) -> None:
        with self._pool_lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(decoder)

    async def warm_up(self) -> None:
        """Build the pool's decoders ahead of the first call (optional)."""
        decoders = [await asyncio.to_thread(self._acquire) for _ in range(self.pool_size)]
        for d in decoders:
            self._release(d)

    async def stream(self) -> PocketSphinxStream:
        decoder = await asyncio.to_thread(self._acquire)
        return PocketSphinxStream(self, decoder)

    def decode(self, decoder: Any, pcm16k: bytes) -> tuple[str, float | None]:
        """Decode one whole utterance of 16 kHz PCM16 (blocking)."""
        try:
            decoder.start_utt()
            decoder.process_raw(_PAD + pcm16k + _PAD, full_utt=True)
            decoder.end_utt()
        except RuntimeError as exc:
            raise ProviderError(self.name, f"decoding failed: {exc}") from exc
        hyp = decoder.hyp()
        if hyp is None:
            return "", None
        prob = float(hyp.prob)
        return hyp.hypstr.strip(), prob if 0.0 <= prob <= 1.0 else None


class PocketSphinxStream:
    """One call's recognition stream: buffers an utterance, decodes it on end of speech."""

    def __init__(self, provider: PocketSphinxSTT, decoder: Any) -> None:
        self._provider = provider
        self._decoder: Any = decoder
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
                text, conf = await asyncio.to_thread(self._provider.decode, self._decoder, pcm)
                if text:
                    t0 = start / _RATE
                    end = t0 + len(pcm) / 2 / _RATE
                    self._out.put_nowait(Transcript(text, True, conf, t0, end))
        except Exception as exc:  # reported to the reader, never lost in a task
            self._out.put_nowait(
                exc if isinstance(exc, ProviderError) else ProviderError("pocketsphinx", str(exc))
            )
        finally:
            self._provider._release(self._decoder)
            self._decoder = None
            self._out.put_nowait(None)

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (item := await self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
