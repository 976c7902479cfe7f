"""Background decoding of whole utterances, for the offline STT providers.

A stream cuts the caller's audio into utterances; each one is queued here and decoded
by one task, in order, while more audio arrives. A failure reaches the reader of
``transcripts()`` as a ``ProviderError``; it is never lost in the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from voxtra.errors import ConfigError, ProviderError
from voxtra.providers.base import Transcript

__all__ = ["UtteranceQueue"]

T = TypeVar("T")


class UtteranceQueue(Generic[T]):
    """Decodes queued utterances one at a time; ``transcripts()`` yields the results."""

    def __init__(self, provider: str, decode: Callable[[T], Awaitable[Transcript | None]]) -> None:
        self._provider = provider
        self._decode = decode
        self._work: asyncio.Queue[T | None] = asyncio.Queue()
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def put(self, utterance: T) -> None:
        self._work.put_nowait(utterance)

    def partial(self, transcript: Transcript) -> None:
        """Pass a partial transcript to the reader now (finals keep their order)."""
        self._out.put_nowait(transcript)

    async def finish(self) -> None:
        """Decode what is queued, then end ``transcripts()``."""
        self._work.put_nowait(None)
        await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while (item := await self._work.get()) is not None:
                transcript = await self._decode(item)
                # Nothing recognised is still an answer: an empty final, so the
                # pipeline can tell "heard nothing" from a hung STT (stt_timeout).
                self._out.put_nowait(transcript or Transcript("", is_final=True))
        except Exception as exc:  # reported to the reader, never lost in a task
            if not isinstance(exc, ProviderError | ConfigError):
                exc = ProviderError(self._provider, f"{type(exc).__name__}: {exc}")
            self._out.put_nowait(exc)
        finally:
            self._out.put_nowait(None)
            # Let go of the decoder, a method of the stream that holds this queue: kept,
            # every finished stream was a reference cycle (one per call).
            self._decode = _nothing

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (item := await self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


async def _nothing(item: object) -> None:
    """The decoder of a queue whose work is done."""
    return None
