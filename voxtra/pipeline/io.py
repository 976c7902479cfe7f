"""What the pipeline needs from the media side, and nothing more.

The pipeline never imports a transport. Anything that can hand it inbound 20 ms
frames and play audio with a queue it can flush is enough: the RTP / WebSocket /
AudioSocket transports, or :class:`voxtra.pipeline.testing.MemoryMediaIO` in tests.

Position bookkeeping: ``played_ms`` counts every millisecond of audio that has
actually gone out since the transport started, ``queued_ms`` what was accepted by
``send`` but not played yet. So right after a ``send``, ``played_ms + queued_ms`` is
the point on the playout timeline where that chunk ends; comparing it with
``played_ms`` later tells the pipeline how much of an answer the caller heard.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import anyio

from voxtra.media.frames import AudioChunk, Codec

__all__ = ["Clock", "ConvertingMediaIO", "MediaIO", "MonotonicClock"]


@runtime_checkable
class MediaIO(Protocol):
    """One call's audio, as the voice pipeline sees it."""

    def frames(self) -> AsyncIterator[AudioChunk]:
        """Inbound caller audio in 20 ms frames, ending when the call hangs up.

        Called once per call; the iterator is not shared.
        """

    async def send(self, chunk: AudioChunk) -> None:
        """Queue audio for the caller, any length, rate or codec.

        The transport converts it to its wire format, cuts it into frames and paces
        it out at 20 ms; ``send`` returns as soon as the audio is queued.
        """

    async def flush(self) -> None:
        """Drop every queued, unplayed frame; playback stops within one frame."""

    @property
    def queued_ms(self) -> float:
        """Milliseconds of audio accepted by ``send`` and not played yet."""

    @property
    def played_ms(self) -> float:
        """Milliseconds of audio played out since start (never counts flushed audio)."""


@runtime_checkable
class ConvertingMediaIO(MediaIO, Protocol):
    """Media that can deliver its inbound frames in another format (the transports).

    The pipeline asks it for PCM16 at the pipeline's input rate, so the conversion
    happens as frames arrive (the RTP transport resamples all its calls' frames in one
    matrix product per tick) and the pipeline's own converter passes them through.
    """

    def set_inbound_format(self, codec: Codec, rate: int) -> None:
        """Make ``frames()`` yield ``codec`` at ``rate`` from now on."""

    @property
    def inbound_format(self) -> tuple[Codec, int]:
        """What ``frames()`` yields now: ``(codec, sample_rate)``."""


class Clock(Protocol):
    """Time source for timeouts and metrics, so tests can run on virtual time."""

    def now(self) -> float:
        """Seconds, monotonic."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""


class MonotonicClock:
    """The real clock: ``time.monotonic`` and the event loop's sleep."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))
