"""Agent assist: listen in on a call between two people, transcribe each side, coach one.

``app.assist(call)`` attaches to a live call whose caller is connected to another
person (after ``call.connect()`` and ``close()``, during ``call.dial()``, or a call
bridged by any other means) without moving either party: both stay in the bridge
they are in, and nothing about their call changes. Per party, Asterisk's own parts:

    snoop on the party (spy=in, whisper=out)  +  an ExternalMedia channel, bridged

``spy=in`` is what that party says, alone (not the other party, not the whisper);
``whisper=out`` adds what the assist sends to what that party hears only, so a
whisper to the callee never reaches the caller (the table in
:mod:`voxtra.calls.parties`: whisper=out on the callee, the caller heard the agent at
-85.8 dBFS, the callee at -20.8). One snoop per party does both; no audio is mixed in
Python.

Each side's audio runs through a listen-only :class:`~voxtra.pipeline.VoicePipeline`
of its own (VAD endpointing, one STT stream per side, the STT's reopen and timeouts),
whose transcripts come out labelled with the side (:class:`AssistTranscript`); a
whisper is that side's pipeline speaking (``say``), through that side's snoop.

Everything the assist makes (snoops, ExternalMedia channels, their bridges, STT
streams, tasks) is released when the ``async with`` block exits, when either party
hangs up (Asterisk ends a snoop with the channel it spies; the assist then closes),
when the call ends, or when the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent, ChannelDestroyed, StasisEnd
from voxtra.calls.context import CallContext, expected
from voxtra.calls.host import CallHost
from voxtra.calls.media import CallMedia
from voxtra.calls.parties import CallParties
from voxtra.calls.state import INTERNAL_PREFIX
from voxtra.errors import CallEnded, PipelineNotConfigured, VoxtraError
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.transport import MediaTransport
from voxtra.pipeline.events import PipelineEvent, UserTranscriptEvent
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.providers.base import STT, TTS, VAD

__all__ = [
    "AgentAssist",
    "AssistError",
    "AssistTranscript",
    "Suggestion",
    "foreign_parties",
    "other_party",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

LISTEN_RATE = 8000
"""The rate each side is heard at without an STT that names its own (phone audio)."""
_BACKLOG = 500
"""Items kept per reader of transcripts, suggestions or audio; then the oldest go."""


class AssistError(VoxtraError, RuntimeError):
    """Agent assist cannot do what was asked: no second party on the call, an unknown
    side, or the assist has ended."""


@dataclass(frozen=True, slots=True)
class AssistTranscript:
    """What one side said: ``speaker`` is ``caller`` or ``callee`` (or the label given),
    ``channel_id`` its channel. Partials have ``is_final=False``. ``start``/``end``
    are seconds from the start of that side's STT stream (when the engine says)."""

    speaker: str
    channel_id: str
    text: str
    is_final: bool
    start: float | None = None
    end: float | None = None
    confidence: float | None = None
    at: float = 0.0
    """Wall-clock time (``time.time()``) it was recognised."""


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A suggestion published with :meth:`AgentAssist.suggest` for the app's other
    systems (a screen, a CRM, the platform)."""

    text: str
    call_id: str
    to: str | None = None
    """The side it is meant for, if any."""
    data: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


class _Readers(Generic[T]):
    """Fan-out to async iterators and callbacks; each reader has a bounded backlog."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[T], Any]] = []
        self.queues: list[asyncio.Queue[T | None]] = []
        self.closed = False

    def publish(self, item: T) -> None:
        for callback in list(self.callbacks):
            try:
                callback(item)
            except Exception:
                logger.exception("agent assist: a callback failed")
        for queue in self.queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(item)

    def reader(self) -> AsyncIterator[T]:
        """Registered now (not at the first ``__anext__``): nothing said from here on
        is missed."""
        queue: asyncio.Queue[T | None] = asyncio.Queue(_BACKLOG)
        if self.closed:
            queue.put_nowait(None)
        self.queues.append(queue)
        return self._read(queue)

    async def _read(self, queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self.queues.remove(queue)

    def close(self) -> None:
        self.closed = True
        for queue in self.queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(None)


class _SideIO:
    """The MediaIO one side's pipeline sees: frames from the side's pump, audio out to
    the side's transport (its snoop whispers it to that party)."""

    def __init__(self, transport: MediaTransport) -> None:
        self.transport = transport
        self.inbound: asyncio.Queue[AudioChunk | None] = asyncio.Queue(_BACKLOG)

    async def frames(self) -> AsyncIterator[AudioChunk]:
        while (chunk := await self.inbound.get()) is not None:
            yield chunk

    async def send(self, chunk: AudioChunk) -> None:
        await self.transport.send(chunk)

    async def flush(self) -> None:
        await self.transport.flush()

    @property
    def queued_ms(self) -> float:
        return self.transport.queued_ms

    @property
    def played_ms(self) -> float:
        return self.transport.played_ms


Resolver = Callable[[], Awaitable[tuple[CallParties, dict[str, str], bool]]]
"""Finds, at start, the call's parties, the sides by label, and whether the context
is the assist's own (a channel that is no call of the app)."""


class _Side:
    """One party as the assist hears it: its snoop, media path and pipeline."""

    def __init__(self, label: str, channel_id: str) -> None:
        self.label = label
        self.channel_id = channel_id
        self.snoop_id: str | None = None
        self.media: CallMedia | None = None
        self.io: _SideIO | None = None
        self.pipeline: VoicePipeline | None = None
        self.ready = asyncio.Event()


class AgentAssist:
    """Listen to both parties of a call, transcribe each, whisper to one, publish
    suggestions (see the module doc). Made by ``app.assist()``; use it as
    ``async with app.assist(call, stt=...) as assist:``."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        stt: STT | None = None,
        tts: TTS | None = None,
        vad: VAD | None = None,
        on_close: Callable[[AgentAssist], None] | None = None,
    ) -> None:
        self._resolve = resolve
        self.parties: CallParties | None = None
        """The call's three-party state (whose snoop helper seats the assist)."""
        self.context: CallContext | None = None
        """The call the assist is on (its context owns every channel and bridge made)."""
        self.stt = stt
        self.tts = tts
        self.vad = vad
        self.sides: dict[str, _Side] = {}
        """The parties by label (``caller``, ``callee``), once started."""
        self.history: list[AssistTranscript] = []
        """Every final transcript so far, in order."""
        self.ended = False
        self._own_context = False
        self._on_close = on_close
        self._transcripts: _Readers[AssistTranscript] = _Readers()
        self._suggestions: _Readers[Suggestion] = _Readers()
        self._audio: _Readers[tuple[str, AudioChunk]] = _Readers()
        self._tasks: list[asyncio.Task[Any]] = []
        self._waiters: list[asyncio.Future[AriEvent]] = []
        self._done = asyncio.Event()
        self._closing: asyncio.Future[None] | None = None
        self._started = False
        self._attached = asyncio.Event()
        """Set once start() is done attaching (or gave up): what it makes is made."""
        rate = getattr(stt, "sample_rate", None)
        self.rate = rate if isinstance(rate, int) and rate > 0 else LISTEN_RATE
        """The rate (PCM16) each side is heard and transcribed at."""

    @property
    def call_id(self) -> str:
        return self.context.id if self.context is not None else ""

    def __repr__(self) -> str:
        labels = {s.label: s.channel_id for s in self.sides.values()}
        return f"<AgentAssist {self.call_id} {labels} {'ended' if self.ended else 'live'}>"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> AgentAssist:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Seat a snoop and a media path on each party and start listening."""
        if self._started:
            return
        if self.ended:
            # Closed before it started (the app stopping, a close() first): it made its
            # snoops and media and nothing released them (close() had already run).
            raise AssistError(f"the agent assist on {self.call_id} was closed before it started")
        self._started = True
        try:
            try:
                self.parties, sides, self._own_context = await self._resolve()
                self.context = self.parties.context
                self.context.check_alive()
                if len(sides) != 2 or len(set(sides.values())) != 2:
                    raise AssistError(f"agent assist needs two different parties, not {sides}")
                self.sides = {label: _Side(label, ch) for label, ch in sides.items()}
                for side in self.sides.values():
                    if self.ended:
                        # A party left meanwhile: the assist is over, as for a hang-up
                        # just after the start (no error); the other side is not made
                        # only to be released.
                        break
                    await self._attach(side)
            finally:
                self._attached.set()
        except BaseException:
            await self.close()
            raise
        if not self._own_context:
            # The call's teardown (its end, the app stopping) closes the assist too.
            self.context.add_cleanup("agent assist", self.close)
        logger.info("call %s: agent assist on %s", self.call_id, list(self.sides))

    async def _attach(self, side: _Side) -> None:
        context, parties = self.context, self.parties
        assert context is not None and parties is not None
        # Registered before the snoop exists: the party may hang up at once.
        watch = context.expect(
            AriEvent, lambda e: _gone(e, side.channel_id) or _gone(e, side.snoop_id)
        )
        self._waiters.append(watch)
        side.snoop_id = await parties.snoop(side.channel_id, "in", "out")
        side.media = CallMedia(context, context.host.settings.media, source=side.snoop_id)
        transport = await side.media.get()
        transport.set_inbound_format(Codec.PCM16, self.rate)
        side.io = _SideIO(transport)
        side.pipeline = VoicePipeline(
            self.stt,
            None,
            self.tts,
            self.vad,
            input_rate=self.rate,
            # Listen-only: nothing is ever said unasked (no fallback, no
            # "did not catch that"), and a whisper is never cut by the party talking.
            fallback_text=None,
            not_understood_text=None,
            backchannels=(),
        )
        side.pipeline.on_event(lambda event: self._on_event(side, event))
        self._tasks.append(asyncio.ensure_future(self._pump(side, transport)))
        self._tasks.append(asyncio.ensure_future(self._hold(side)))
        self._tasks.append(asyncio.ensure_future(self._watch(side, watch)))
        await side.ready.wait()

    async def _pump(self, side: _Side, transport: MediaTransport) -> None:
        """The side's frames to its pipeline and to audio readers."""
        assert side.io is not None
        inbound = side.io.inbound
        try:
            async for frame in transport.frames():
                if inbound.full():
                    inbound.get_nowait()
                inbound.put_nowait(frame)
                if self._audio.queues or self._audio.callbacks:
                    self._audio.publish((side.label, frame))
        finally:
            if inbound.full():
                inbound.get_nowait()
            inbound.put_nowait(None)

    async def _hold(self, side: _Side) -> None:
        assert side.pipeline is not None and side.io is not None
        try:
            async with side.pipeline.attach(side.io, call_id=self.call_id):
                side.ready.set()
                await self._done.wait()
        except Exception:
            logger.exception("call %s: agent assist: the %s side failed", self.call_id, side.label)
        finally:
            side.ready.set()

    async def _watch(self, side: _Side, watch: asyncio.Future[AriEvent]) -> None:
        with contextlib.suppress(CallEnded):
            await expected(watch)
        if self._closing is None:
            logger.info("call %s: agent assist: the %s left", self.call_id, side.label)
            self._closing = asyncio.ensure_future(self._close())

    def _on_event(self, side: _Side, event: PipelineEvent) -> None:
        if not isinstance(event, UserTranscriptEvent) or not event.text:
            return
        turn = AssistTranscript(
            side.label,
            side.channel_id,
            event.text,
            event.is_final,
            event.start,
            event.end,
            event.confidence,
            time.time(),
        )
        if turn.is_final:
            self.history.append(turn)
        self._transcripts.publish(turn)

    async def close(self) -> None:
        """Release everything the assist made. Idempotent; the call goes on."""
        # One close, in a task of its own: a caller cancelled meanwhile (its call's task
        # group ending, a block left by a cancellation) must not leave half of it.
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self.ended = True
        self._done.set()
        if self._started:
            # A party leaving while start() attaches to the other: what that attach made
            # after the sides were released here (a snoop whispering to the party, its
            # ExternalMedia channel and bridge, the pump, an STT stream) stayed for the
            # rest of the call (tests/integration/test_assist_hangups_asterisk.py).
            # Bounded: each step of an attach has its own time limit.
            await self._attached.wait()
        current = asyncio.current_task()
        others = [task for task in self._tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        # Each task's coroutine holds this assist: let go of them, or they are a cycle.
        self._tasks.clear()
        context = self.context
        if context is not None:
            for waiter in self._waiters:
                context.forget(waiter)
            for side in self.sides.values():
                await self._release(context, side)
            if self._own_context:
                await context.teardown()
        for side in self.sides.values():
            # Its pipeline's event handler holds this assist, which holds the sides.
            side.pipeline = None
        self._transcripts.close()
        self._suggestions.close()
        self._audio.close()
        if self._on_close is not None:
            self._on_close(self)
        logger.info("call %s: agent assist closed", self.call_id)

    async def _release(self, context: CallContext, side: _Side) -> None:
        if side.media is not None:
            await side.media.close()
            if side.media.bridge_id is not None:
                with contextlib.suppress(AriError):
                    await context.release_bridge(side.media.bridge_id)
        if side.snoop_id is not None:
            with contextlib.suppress(AriError):
                await context.release_channel(side.snoop_id)

    async def wait_ended(self) -> None:
        """Until the assist has closed (a party hung up, or :meth:`close`)."""
        await self._done.wait()

    # -- what it offers -------------------------------------------------------------------

    def transcripts(self) -> AsyncIterator[AssistTranscript]:
        """Both sides' transcripts, partial and final, as they come, until the assist
        ends. Reading starts when this is called."""
        return self._transcripts.reader()

    def on_transcript(
        self, callback: Callable[[AssistTranscript], Any]
    ) -> Callable[[AssistTranscript], Any]:
        """Call ``callback(turn)`` for each transcript (inline: keep it quick)."""
        self._transcripts.callbacks.append(callback)
        return callback

    def audio(
        self, codec: str = "pcm16", sample_rate: int | None = None
    ) -> AsyncIterator[tuple[str, AudioChunk]]:
        """Each side's own voice as ``(label, 20 ms chunk)``, interleaved as it comes,
        until the assist ends."""
        converter = ChunkConverter(Codec(codec), sample_rate or self.rate)
        source = self._audio.reader()

        async def convert() -> AsyncIterator[tuple[str, AudioChunk]]:
            async for label, chunk in source:
                yield label, converter.convert(chunk)

        return convert()

    async def whisper(self, to: str, text: str) -> None:
        """Speak ``text`` (the TTS) to the side ``to`` only; returns once it has played.
        The other side does not hear it."""
        side = self.sides.get(to) or next(
            (s for s in self.sides.values() if s.channel_id == to), None
        )
        if side is None:
            raise AssistError(f"whisper(to={to!r}): the sides are {list(self.sides)}")
        if self.tts is None:
            raise PipelineNotConfigured("assist.whisper()", ["tts"], "app.assist(..., tts=...)")
        if self.ended or side.pipeline is None:
            raise AssistError("the agent assist has ended")
        try:
            await side.pipeline.say(text, interruptible=False, add_to_history=False)
        except VoxtraError:
            if self.ended:  # a party hung up while it played: say so in the assist's terms
                raise AssistError("the agent assist ended during the whisper") from None
            raise

    def suggest(self, text: str, *, to: str | None = None, **data: Any) -> Suggestion:
        """Publish a suggestion to :meth:`suggestions` readers and callbacks."""
        suggestion = Suggestion(text, self.call_id, to, dict(data), time.time())
        self._suggestions.publish(suggestion)
        return suggestion

    def suggestions(self) -> AsyncIterator[Suggestion]:
        """Suggestions as they are published, until the assist ends."""
        return self._suggestions.reader()

    def on_suggestion(self, callback: Callable[[Suggestion], Any]) -> Callable[[Suggestion], Any]:
        """Call ``callback(suggestion)`` for each suggestion (inline: keep it quick)."""
        self._suggestions.callbacks.append(callback)
        return callback


def _gone(event: AriEvent, channel_id: str | None) -> bool:
    return (
        channel_id is not None
        and isinstance(event, StasisEnd | ChannelDestroyed)
        and event.channel_id == channel_id
    )


async def other_party(parties: CallParties) -> str:
    """The channel the call's caller talks with: the callee ``connect()`` dialled, else
    the one other person in the caller's bridge (``dial()``, ``transfer_to``,
    ``bridge_with``, or a bridge made outside the app). The app's own media and snoop
    channels do not count."""
    context = parties.context
    if parties.callee_id is not None:
        return parties.callee_id
    for bridge in await context.ari.bridges.list():
        if context.id not in bridge.channels:
            continue
        others = [
            ch
            for ch in bridge.channels
            if ch != context.id
            and not ch.startswith((f"{INTERNAL_PREFIX}media-", f"{INTERNAL_PREFIX}snoop-"))
        ]
        if len(others) == 1:
            return others[0]
        raise AssistError(
            f"call {context.id}: {len(others)} other parties in its bridge; pass sides="
        )
    raise AssistError(f"call {context.id} is in no bridge with another party")


async def foreign_parties(host: CallHost, channel_id: str) -> CallParties:
    """A context of the assist's own for a channel that is no call of the app (a call
    bridged in the dialplan, another app's): what the assist makes belongs to it and
    goes at :meth:`AgentAssist.close`."""
    try:
        channel = await host.ari.channels.get(channel_id)
    except AriNotFound:
        raise AssistError(f"no channel {channel_id!r} in Asterisk") from None
    context = CallContext(host, channel)
    return CallParties(context, CallMedia(context, host.settings.media))
