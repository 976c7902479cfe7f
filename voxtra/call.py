"""CallSession: the user's handle on one call.

A session is fed ARI events by the app (synchronously, without ever running user code
inline) and exposes the call as async methods. Every wait a session performs (answer,
playback, DTMF, recording) ends promptly with :class:`~voxtra.errors.CallEnded` when the
caller hangs up, instead of running into its timeout.

Lifecycle rule: when the route handler returns, the call is hung up, unless it was
transferred (``transfer_to``, ``transfer_to_queue``) or handed to a bridge
(``bridge_with``), in which case it lives on until a party hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from voxtra._callbacks import check_callback
from voxtra.ari.errors import AriConnectionError, AriError, AriNotFound, AriUnprocessable
from voxtra.ari.events import (
    AriEvent,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    ChannelStateChange,
    PlaybackFinished,
    StasisEnd,
)
from voxtra.ari.models import Channel
from voxtra.errors import CallEnded, PipelineNotConfigured, VoxtraError
from voxtra.media.frames import AudioChunk, Codec

if TYPE_CHECKING:
    from voxtra.app import VoxtraApp
    from voxtra.call_media import CallMedia
    from voxtra.media.transport import MediaTransport
    from voxtra.pipeline.agent import Agent
    from voxtra.pipeline.events import SayResult, UserTranscriptEvent
    from voxtra.pipeline.pipeline import EndReason, VoicePipeline
    from voxtra.recording.call_recorder import CallRecorder, RecordingResult
    from voxtra.recording.sinks import RecordingSink
    from voxtra.voice import CallVoice, VoiceConfig

__all__ = ["CallDirection", "CallEndReason", "CallSession", "CallState", "Playback"]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=AriEvent)
HangupCallback = Callable[["CallSession"], Awaitable[None]]

INTERNAL_PREFIX = "voxtra-internal-"
"""Channel ids the app creates for itself (media, snoop, transfer legs): never routed."""


class CallDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallState(StrEnum):
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    FAILED = "failed"


def internal_id(kind: str, instance: str = "") -> str:
    """A new id for a channel or bridge the app creates; ``instance`` marks whose it is.

    ``voxtra-internal-<kind>-<instance>-<random>``: another process serving the same
    Stasis app leaves ids that carry a different instance alone when it reconciles.
    """
    if instance:
        return f"{INTERNAL_PREFIX}{kind}-{instance}-{uuid.uuid4().hex[:12]}"
    return f"{INTERNAL_PREFIX}{kind}-{uuid.uuid4().hex[:12]}"


class CallEndReason(StrEnum):
    """Why a call ended (``CallSession.end_reason``)."""

    REMOTE = "remote"
    """Hung up outside the app: the caller, the far end, or Asterisk itself."""
    HANGUP = "hangup"
    """The app hung up (``call.hangup()``, or the handler returned)."""
    MAX_DURATION = "max_call_duration"
    """The call reached ``settings.max_call_duration`` and the app hung it up."""
    SHUTDOWN = "shutdown"
    """The app was stopping and the call outlived the drain deadline."""
    GONE = "gone"
    """The channel was no longer in Asterisk when the app reconnected."""
    TRANSFERRED = "transferred"
    """The call left the app into the dialplan (``transfer_to("exten@context")``)."""


class _Waiter:
    __slots__ = ("future", "predicate")

    def __init__(self, predicate: Callable[[AriEvent], bool]) -> None:
        self.predicate = predicate
        self.future: asyncio.Future[AriEvent] = asyncio.get_running_loop().create_future()


class Playback:
    """A sound playing to the call: ``await`` it (finished), ``stop()`` it, or ignore it."""

    def __init__(self, session: CallSession, playback_id: str, media: str) -> None:
        self.session = session
        self.id = playback_id
        self.media = media
        self._finished: asyncio.Future[AriEvent] = session._expect(
            PlaybackFinished, lambda e: e.playback.id == playback_id
        )

    @property
    def done(self) -> bool:
        return self._finished.done()

    async def wait(self, timeout: float | None = None) -> None:
        """Until the playback finished (or was stopped). CallEnded if the call ends first."""
        await self.session._await_event(self._finished, timeout)

    def __await__(self) -> Any:
        return self.wait().__await__()

    async def stop(self) -> None:
        """Stop playing; a playback already finished is not an error."""
        with contextlib.suppress(AriNotFound):
            await self.session.app.ari.playbacks.stop(self.id)


class CallSession:
    """One call in the Stasis application."""

    def __init__(
        self,
        app: VoxtraApp,
        channel: Channel,
        *,
        direction: CallDirection = CallDirection.INBOUND,
        args: tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.channel = channel
        self.id: str = channel.id
        self.direction = direction
        self.args = args
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.app_name: str = app.app_name
        self.caller_id: str = channel.caller.number if channel.caller else ""
        self.caller_name: str = channel.caller.name if channel.caller else ""
        dialed = args[0] if args else (channel.dialplan.exten if channel.dialplan else "")
        self.called_number: str = dialed or ""
        self.state = CallState.IN_PROGRESS if channel.state == "Up" else CallState.RINGING
        self.voice_config: VoiceConfig = app.voice
        """Providers and options for say/listen/agent; change before first use."""
        self._voice: CallVoice | None = None
        self.transferred = False
        self.handed_off = False
        self.hangup_cause: int | None = None
        self.end_reason: CallEndReason | None = None
        """Why the call ended (set by whichever cause came first); None while live."""
        self.created_at = time.time()
        self._answered_at: float | None = (
            time.monotonic() if self.state is CallState.IN_PROGRESS else None
        )
        self._ended = asyncio.Event()
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done as soon as the call is hanging up or gone: wakes every wait at once."""
        self._hanging_up = False
        self._waiters: list[_Waiter] = []
        self._dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._hangup_callbacks: list[HangupCallback] = []
        self._callbacks_fired = False
        self._bridges: set[str] = set()
        self._channels: set[str] = set()
        self._peers: set[CallSession] = set()
        self._handler_done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dtmf_dropped = 0
        self._media: CallMedia | None = None
        self._media_closing: asyncio.Future[None] | None = None
        self._media_lock = asyncio.Lock()
        self._recorder: CallRecorder | None = None

    def __repr__(self) -> str:
        return f"<CallSession {self.id} {self.direction} {self.state} caller={self.caller_id!r}>"

    # -- facts ---------------------------------------------------------------------

    @property
    def duration(self) -> float:
        """Seconds since the call was answered; 0 before."""
        if self._answered_at is None:
            return 0.0
        end = self._ended_at if self._ended.is_set() else time.monotonic()
        return max(0.0, end - self._answered_at)

    _ended_at: float = 0.0

    @property
    def ended(self) -> bool:
        return self._ended.is_set() or self._hanging_up

    async def wait_ended(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ended.wait(), timeout)

    def _check_alive(self) -> None:
        if self.ended:
            raise CallEnded(self.id)

    # -- events (called by the app, synchronously) ----------------------------------

    def handle_event(self, event: AriEvent) -> None:
        """Update state and wake waiters. Never runs user code, never blocks."""
        if isinstance(event, ChannelStateChange) and event.channel.id == self.id:
            self.channel = event.channel
            if event.channel.state == "Up" and self.state is CallState.RINGING:
                self._mark_answered()
        elif isinstance(event, ChannelDtmfReceived) and event.channel.id == self.id:
            try:
                self._dtmf.put_nowait(event.digit)
            except asyncio.QueueFull:
                self.dtmf_dropped += 1
        elif isinstance(event, ChannelHangupRequest) and event.channel.id == self.id:
            self._end_because(CallEndReason.REMOTE)
            self._hanging_up = True
            self._fail_waiters()
        elif isinstance(event, (StasisEnd, ChannelDestroyed)) and event.channel.id == self.id:
            if isinstance(event, ChannelDestroyed):
                self.hangup_cause = event.cause
            left = isinstance(event, StasisEnd) and self.transferred  # into the dialplan
            self._end_because(CallEndReason.TRANSFERRED if left else CallEndReason.REMOTE)
            self._mark_ended()
            return
        for waiter in list(self._waiters):
            if not waiter.future.done() and waiter.predicate(event):
                waiter.future.set_result(event)
                self._waiters.remove(waiter)

    def _mark_answered(self) -> None:
        self.state = CallState.IN_PROGRESS
        if self._answered_at is None:
            self._answered_at = time.monotonic()

    def _end_because(self, reason: CallEndReason) -> None:
        """Record why the call ends; the first cause wins."""
        if self.end_reason is None:
            self.end_reason = reason

    def _mark_ended(self) -> None:
        if self._ended.is_set():
            return
        self._ended_at = time.monotonic()
        self._hanging_up = True
        if self.state is not CallState.FAILED:
            self.state = CallState.COMPLETED
        self._ended.set()
        self._fail_waiters()
        # audio_stream() waits on the transport, not on events: close it now, so the
        # stream ends and send_audio() raises CallEnded. Left open, an echo handler sat
        # in its loop until hangup_grace cancelled it (all 20 calls of the Asterisk-kill
        # fault test, and any caller hangup). The teardown awaits the close.
        media = self._media
        if media is not None and media.transport is not None and not media.transport.closed:
            self._media_closing = asyncio.ensure_future(media.transport.close())

    def _fail_waiters(self) -> None:
        if not self._gone.done():
            self._gone.set_result(None)
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(CallEnded(self.id))
                # Retrieve nothing here: the awaiting side sees the exception; if nobody
                # awaits (an ignored Playback), mark it retrieved to avoid log noise.
                waiter.future.exception()
        self._waiters.clear()

    def _expect(self, kind: type[E], predicate: Callable[[E], bool]) -> asyncio.Future[AriEvent]:
        """Register interest in an event *before* the request that causes it."""
        waiter = _Waiter(lambda e: isinstance(e, kind) and predicate(e))
        if self.ended:
            waiter.future.set_exception(CallEnded(self.id))
            waiter.future.exception()
        else:
            self._waiters.append(waiter)
        return waiter.future

    async def _await_event(
        self, future: asyncio.Future[AriEvent], timeout: float | None
    ) -> AriEvent:
        # shield: a timeout or cancellation of this wait must not cancel the shared
        # future (a Playback may be awaited again later).
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    def _cancel_waiter(self, future: asyncio.Future[AriEvent]) -> None:
        self._waiters = [w for w in self._waiters if w.future is not future]
        if not future.done():
            future.cancel()

    # -- call control ----------------------------------------------------------------

    async def _ari(self, coro: Awaitable[Any]) -> Any:
        """Run an ARI request for this call; a vanished channel becomes CallEnded.

        A request that cannot reach Asterisk waits for the events to reconnect and
        reconcile (bounded: ``app.outage_wait``): if the call turned out gone, CallEnded;
        otherwise the connection error. It is not sent again (it may have been done).
        """
        since = self.app._events_generation()
        try:
            return await coro
        except (AriNotFound, AriUnprocessable) as exc:
            if self.ended or isinstance(exc, AriNotFound):
                raise CallEnded(self.id, f"call {self.id} has ended ({exc.message})") from exc
            raise
        except AriConnectionError as exc:
            if not self.ended:
                await self.app._wait_reconciled(since, self._ended)
            if self.ended:
                raise CallEnded(self.id, f"call {self.id} ended while ARI was down") from exc
            raise

    async def answer(self) -> None:
        """Answer the call (no-op when already answered)."""
        self._check_alive()
        if self.state is CallState.RINGING or self._answered_at is None:
            await self._ari(self.app.ari.channels.answer(self.id))
            self._mark_answered()
        if self.app.settings.media.attach_on_answer:
            await self.media()

    async def hangup(self, reason: str = "normal") -> None:
        """Hang up. Idempotent: hanging up an ended call does nothing."""
        if self._ended.is_set():
            return
        self._end_because(CallEndReason.HANGUP)
        self._hanging_up = True
        self._fail_waiters()
        with contextlib.suppress(AriNotFound, AriUnprocessable):
            await self.app._retry_after_outage(
                lambda: self.app.ari.channels.hangup(self.id, reason=reason)
            )

    async def ring(self) -> None:
        self._check_alive()
        await self._ari(self.app.ari.channels.ring(self.id))

    async def hold(self, moh_class: str | None = None) -> None:
        """Put the caller on hold with music on hold."""
        self._check_alive()
        await self._ari(self.app.ari.channels.start_moh(self.id, moh_class))
        self.state = CallState.ON_HOLD

    async def unhold(self) -> None:
        self._check_alive()
        await self._ari(self.app.ari.channels.stop_moh(self.id))
        self.state = CallState.IN_PROGRESS

    async def mute(self, direction: str = "in") -> None:
        """Mute what the caller says (``in``), hears (``out``), or both."""
        self._check_alive()
        await self._ari(self.app.ari.channels.mute(self.id, direction))  # type: ignore[arg-type]

    async def unmute(self, direction: str = "in") -> None:
        self._check_alive()
        await self._ari(self.app.ari.channels.unmute(self.id, direction))  # type: ignore[arg-type]

    async def get_variable(self, name: str) -> str:
        self._check_alive()
        return str(await self._ari(self.app.ari.channels.get_variable(self.id, name)))

    async def set_variable(self, name: str, value: str) -> None:
        self._check_alive()
        await self._ari(self.app.ari.channels.set_variable(self.id, name, value))

    # -- playback --------------------------------------------------------------------

    async def play_file(self, name: str | Sequence[str], *, lang: str | None = None) -> Playback:
        """Start playing a sound (``sound:`` prefix optional) and return its handle.

        A list plays its sounds back to back as one playback (finished after the last).
        """
        self._check_alive()
        names = [name] if isinstance(name, str) else list(name)
        if not names:
            raise ValueError("play_file needs at least one sound")
        media = [n if ":" in n else f"sound:{n}" for n in names]
        playback_id = internal_id("playback")
        playback = Playback(self, playback_id, ",".join(media))
        try:
            await self._ari(
                self.app.ari.channels.play(self.id, media, playback_id=playback_id, lang=lang)
            )
        except BaseException:
            self._cancel_waiter(playback._finished)
            raise
        return playback

    async def play_and_wait(self, name: str, timeout: float | None = None) -> None:
        playback = await self.play_file(name)
        await playback.wait(timeout)

    # -- DTMF ------------------------------------------------------------------------

    async def listen_dtmf(self, timeout: float | None = None) -> str | None:
        """The next DTMF digit the caller presses, or None after ``timeout`` seconds."""
        self._check_alive()
        if not self._dtmf.empty():
            return self._dtmf.get_nowait()
        getter: asyncio.Future[str] = asyncio.ensure_future(self._dtmf.get())
        ended: asyncio.Future[None] = asyncio.ensure_future(asyncio.shield(self._gone))
        waits: set[asyncio.Future[Any]] = {getter, ended}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in (getter, ended):
                if not fut.done():
                    fut.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        if ended in done:
            raise CallEnded(self.id)
        return None

    def clear_dtmf(self) -> None:
        """Forget digits pressed before now (e.g. before a new menu prompt)."""
        while not self._dtmf.empty():
            self._dtmf.get_nowait()

    async def gather(
        self,
        max_digits: int = 1,
        *,
        terminator: str | None = "#",
        first_digit_timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
    ) -> str:
        """Collect up to ``max_digits`` digits (a menu choice, a PIN).

        Stops at ``terminator`` (not included), at ``max_digits``, or when a timeout
        passes; returns what was collected so far (possibly "").
        """
        digits = ""
        timeout = first_digit_timeout
        while len(digits) < max_digits:
            digit = await self.listen_dtmf(timeout=timeout)
            if digit is None or (terminator and digit == terminator):
                break
            digits += digit
            timeout = inter_digit_timeout
        return digits

    async def send_dtmf(
        self, digits: str, *, duration_ms: int = 100, between_ms: int = 100
    ) -> None:
        """Send DTMF to the caller (RFC 4733 on SIP)."""
        self._check_alive()
        await self._ari(
            self.app.ari.channels.send_dtmf(
                self.id, digits, duration=duration_ms, between=between_ms
            )
        )

    # -- audio -------------------------------------------------------------------------

    async def media(self) -> MediaTransport:
        """The call's media transport (ExternalMedia), attached on first use."""
        self._check_alive()
        async with self._media_lock:
            if self._media is None:
                from voxtra.call_media import CallMedia

                media = CallMedia(self, self.app.settings.media)
                self._media = media
                await media.attach()
            if self._media.transport is None:
                raise CallEnded(self.id, "media is not attached")
            return self._media.transport

    async def audio_stream(
        self, *, codec: Codec | str = Codec.ULAW, sample_rate: int = 8000
    ) -> AsyncIterator[AudioChunk]:
        """The caller's audio as 20 ms chunks, until the call ends.

        mu-law 8 kHz by default; ``codec="pcm16"`` with a ``sample_rate`` gives PCM at
        that rate. One consumer at a time: frames are not duplicated between readers.
        """
        from voxtra.media.convert import ChunkConverter

        transport = await self.media()
        converter = ChunkConverter(Codec(codec), sample_rate)  # validates the request
        # The transport converts as frames arrive (RTP: for all calls in one batch per
        # tick); the converter only handles frames queued before the switch.
        transport.set_inbound_format(converter.codec, converter.rate)
        async for frame in transport.frames():
            chunk = converter.convert(frame)
            if chunk.data:
                yield chunk

    async def send_audio(self, chunk: AudioChunk) -> None:
        """Play audio to the caller: any length, codec and rate; paced in 20 ms frames."""
        transport = await self.media()
        await transport.send(chunk)

    async def flush_audio(self) -> None:
        """Drop audio queued for the caller (barge-in): playback stops within a frame."""
        if self._media is not None and self._media.transport is not None:
            await self._media.transport.flush()

    # -- recording -------------------------------------------------------------------

    def _recorder_for_call(self) -> CallRecorder:
        if self._recorder is None:
            from voxtra.recording.call_recorder import CallRecorder

            self._recorder = CallRecorder(self)
        return self._recorder

    async def record_start(
        self,
        name: str = "",
        fmt: str = "wav",
        *,
        sink: RecordingSink | None = None,
        beep: bool = False,
        max_duration: int | None = None,
        max_silence: int | None = None,
        finish_on_key: str | None = None,
    ) -> str:
        """Start recording the call (a snoop on the caller: both directions); returns the name.

        Without ``name`` a unique, safe one is generated. The finished file is fetched
        over ARI and delivered to ``sink`` (else the app's ``recording_sink``, else a
        LocalFileSink in ``settings.recordings_dir``). ``finish_on_key`` keys stop it
        when pressed. To wait for the end and learn what ended it, use :meth:`record`.
        """
        self._check_alive()
        return await self._recorder_for_call().start(
            name,
            fmt,
            sink=sink,
            beep=beep,
            max_duration=max_duration,
            max_silence=max_silence,
            finish_on_key=finish_on_key,
        )

    async def record(
        self,
        name: str = "",
        fmt: str = "wav",
        *,
        sink: RecordingSink | None = None,
        finish_on_key: str | None = "#",
        max_length: int | None = 3600,
        silence_timeout: int | None = None,
        beep: bool = False,
    ) -> RecordingResult:
        """Record until a key, ``max_length`` s, ``silence_timeout`` s or the hang-up.

        Returns a ``RecordingResult``: the name and ``reason`` (``finish_on_key``,
        ``max_length``, ``silence_timeout``, ``hangup``), and the ``key`` pressed.
        """
        self._check_alive()
        return await self._recorder_for_call().record(
            name,
            fmt,
            sink=sink,
            finish_on_key=finish_on_key,
            max_length=max_length,
            silence_timeout=silence_timeout,
            beep=beep,
        )

    async def record_stop(self) -> str | None:
        """Stop recording and hand the file to its sink; the name, or None if idle."""
        if self._recorder is None:
            return None
        return await self._recorder.stop()

    # -- speech (the voice pipeline) -----------------------------------------------------

    def _voice_for_call(self, operation: str, needs: tuple[str, ...] = ()) -> CallVoice:
        """The call's voice, after checking ``needs`` (provider fields) are configured:
        PipelineNotConfigured names what ``operation`` lacks and where to pass it."""
        config = self._voice.config if self._voice is not None else self.voice_config
        missing = [n for n in needs if getattr(config, n) is None]
        if missing or not config.configured:
            raise PipelineNotConfigured(operation, missing or list(needs) or ["stt", "llm", "tts"])
        if self._voice is None:
            from voxtra.voice import CallVoice

            self._voice = CallVoice(self, self.voice_config)
        return self._voice

    @property
    def pipeline(self) -> VoicePipeline | None:
        """This call's voice pipeline (events, metrics); None without an AI pipeline."""
        if not self.voice_config.configured:
            return None
        return self._voice_for_call("pipeline").pipeline

    @property
    def agent(self) -> Agent | None:
        """This call's LLM agent (history, tools); None without an AI pipeline."""
        if not self.voice_config.configured:
            return None
        return self._voice_for_call("agent").pipeline.agent

    async def say(self, text: str, *, interruptible: bool = True) -> SayResult:
        """Speak ``text``; returns when it was played, or early if the caller barged in.

        Raises :class:`~voxtra.errors.PipelineNotConfigured` without a TTS.
        """
        self._check_alive()
        voice = self._voice_for_call("say()", ("tts",))
        pipeline = await voice.attach()
        return await pipeline.say(text, interruptible=interruptible)

    async def listen(self, timeout: float | None = None) -> UserTranscriptEvent | None:
        """The caller's next final transcript; None after ``timeout``; CallEnded on hangup."""
        self._check_alive()
        pipeline = await self._voice_for_call("listen()", ("stt",)).attach()
        try:
            return await pipeline.listen(timeout)
        except CallEnded:
            raise CallEnded(self.id) from None

    async def converse(self) -> EndReason:
        """Hand the call to the autonomous STT -> LLM -> TTS conversation until it ends."""
        self._check_alive()
        return await self._voice_for_call("converse()", ("stt", "llm", "tts")).converse()

    # -- transfer and bridging ---------------------------------------------------------

    async def transfer_to(
        self, target: str, *, timeout: int = 30, caller_id: str | None = None
    ) -> None:
        """Blind transfer.

        ``exten@context`` (or ``exten@context:priority``) continues the call in the
        dialplan: ARI ``continue``. A channel endpoint (``PJSIP/100``,
        ``PJSIP/trunk/sip:+1555...``, ``Local/x@ctx``) is dialed from the app and, once
        answered, bridged with the caller; the app keeps both legs until one hangs up.
        ARI ``redirect`` is not used: for PJSIP it sends a 302 back to the caller's
        carrier, which most trunks refuse.
        """
        self._check_alive()
        if "/" not in target:
            exten, _, rest = target.partition("@")
            context, _, priority = rest.partition(":")
            # Set first: StasisEnd can arrive before the response (end_reason reads it).
            self.transferred = True
            try:
                await self._ari(
                    self.app.ari.channels.continue_in_dialplan(
                        self.id,
                        context=context or None,
                        extension=exten or None,
                        priority=int(priority) if priority else 1,
                    )
                )
            except BaseException:
                self.transferred = False
                raise
            return
        leg = await self.app._dial_internal_leg(
            target, timeout=timeout, caller_id=caller_id or self.caller_id or None, owner=self
        )
        bridge_id = await self._create_bridge("transfer")
        await self._ari(self.app.ari.bridges.add_channel(bridge_id, [self.id, leg]))
        self.transferred = True

    async def transfer_to_queue(self, queue: str, *, context: str = "voxtra-queues") -> None:
        """Send the caller into an Asterisk queue (the shipped dialplan's ``voxtra-queues``)."""
        self._check_alive()
        await self.transfer_to(f"{queue}@{context}")

    async def bridge_with(self, other: CallSession) -> str:
        """Connect this call and ``other`` in a mixing bridge; returns the bridge id.

        Both calls are handed to the bridge: their handlers may return without hanging
        up. When one party leaves, the bridge is destroyed and the other is hung up once
        its handler has returned.
        """
        self._check_alive()
        other._check_alive()
        bridge_id = await self._create_bridge("call")
        other._bridges.add(bridge_id)
        self.app._index_bridge(bridge_id, other)
        await self._ari(self.app.ari.bridges.add_channel(bridge_id, [self.id, other.id]))
        self.handed_off = other.handed_off = True
        self._peers.add(other)
        other._peers.add(self)
        return bridge_id

    async def _create_bridge(self, kind: str) -> str:
        # proxy_media for the media bridge: without it Asterisk switches the caller and
        # the ExternalMedia channel to a native RTP bridge once both send, and the app's
        # inbound audio stopped within a second (measured: say while listening).
        bridge_type = "mixing,proxy_media" if kind == "media" else "mixing"
        bridge = await self.app.ari.bridges.create(
            bridge_type, bridge_id=self.app.internal_id(kind)
        )
        self._bridges.add(bridge.id)
        self.app._index_bridge(bridge.id, self)
        return bridge.id

    # -- callbacks and helpers --------------------------------------------------------

    def on_hangup(self, callback: HangupCallback) -> HangupCallback:
        """Register an async callback run once when the call ends (decorator-friendly).

        ``callback(call)`` must be ``async def`` and take the call: anything else raises
        :class:`~voxtra.errors.CallbackSignatureError` here, not at hangup.
        """
        check_callback(callback, "on_hangup", ("call",))
        self._hangup_callbacks.append(callback)
        return callback

    def spawn(self, coro: Awaitable[Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run a helper task owned by this call: cancelled when the call ends."""
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_for_event(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] | None = None,
        timeout: float | None = None,
    ) -> E:
        """Wait for the next ARI event of ``kind`` about this call."""
        self._check_alive()
        future = self._expect(kind, predicate or (lambda e: True))
        try:
            event = await self._await_event(future, timeout)
        finally:
            self._cancel_waiter(future)
        assert isinstance(event, kind)
        return event

    # -- teardown (run by the app) -----------------------------------------------------

    async def _teardown(self) -> None:
        """Release everything the call owns; fire hangup callbacks once, in order.

        Every step runs on its own: one that raises (a peer's hangup refused by ARI, a
        media transport failing to close) is logged and the next still runs, and the
        hangup callbacks run in any case, exactly once.
        """
        try:
            await self._release("voice", self._close_voice)
            await self._release("helper tasks", self._cancel_tasks)
            await self._release("media", self._close_media)
            await self._release("recording", self._finalize_recording)
            await self._release("internal channels", self._hangup_channels)
            await self._release("bridges", self._destroy_bridges)
            await self._release("peers", self._release_peers)
        finally:
            await self._fire_hangup_callbacks()

    async def _release(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception:
            logger.exception("call %s: teardown step %r failed; going on", self.id, what)

    async def _close_voice(self) -> None:
        if self._voice is not None:
            await self._voice.close()

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_media(self) -> None:
        if self._media_closing is not None:
            await self._media_closing
        media, self._media = self._media, None
        if media is not None:
            await media.close()

    async def _finalize_recording(self) -> None:
        if self._recorder is not None:
            await self._recorder.finalize()

    async def _hangup_channels(self) -> None:
        await self._release_each(
            self._channels, self.app.ari.channels.hangup, self.app._forget_internal, "hang up"
        )

    async def _destroy_bridges(self) -> None:
        await self._release_each(
            self._bridges, self.app.ari.bridges.destroy, self.app._unindex_bridge, "destroy"
        )

    async def _release_each(
        self,
        ids: set[str],
        release: Callable[[str], Awaitable[Any]],
        forget: Callable[[str], None],
        verb: str,
    ) -> None:
        """Release every id (one failure does not stop the rest), then forget it."""
        for item in list(ids):
            try:
                with contextlib.suppress(AriNotFound):
                    await self.app._retry_after_outage(functools.partial(release, item))
            except AriError as exc:
                logger.warning("call %s: cannot %s %s: %s", self.id, verb, item, exc)
            finally:
                forget(item)
        ids.clear()

    async def _release_peers(self) -> None:
        for peer in list(self._peers):
            peer._peers.discard(self)
            if peer._handler_done.is_set() and not peer.ended:
                try:
                    await peer.hangup()
                except Exception:
                    logger.exception("call %s: hanging up peer %s failed", self.id, peer.id)
        self._peers.clear()

    async def _fire_hangup_callbacks(self) -> None:
        if self._callbacks_fired:
            return
        self._callbacks_fired = True
        for callback in self._hangup_callbacks:
            try:
                await callback(self)
            except Exception:
                logger.exception("on_hangup callback %r failed for call %s", callback, self.id)

    async def dtmf_digits(self) -> AsyncIterator[str]:
        """Every digit the caller presses, until the call ends."""
        while True:
            try:
                digit = await self.listen_dtmf()
            except CallEnded:
                return
            if digit is not None:
                yield digit


class OriginateError(VoxtraError):
    """An outbound call was not answered. ``cause`` is Asterisk's hangup cause code."""

    def __init__(
        self, endpoint: str, cause: int | None, cause_txt: str, message: str, hint: str = ""
    ) -> None:
        if cause is not None:
            said = f" (cause {cause}: {cause_txt or 'Unknown'})"
        else:
            said = f" (Asterisk: {cause_txt})" if cause_txt else ""
        super().__init__(f"{endpoint}: {message}{said}" + (f"; {hint}" if hint else ""))
        self.endpoint = endpoint
        self.cause = cause
        self.cause_txt = cause_txt
        self.hint = hint
        """What to check to fix it, when Voxtra can tell (else "")."""


class CallBusy(OriginateError):
    """The far end was busy (cause 17)."""


class CallNoAnswer(OriginateError):
    """Nobody answered before the timeout (cause 18/19, or our own timeout)."""


class CallFailed(OriginateError):
    """Congestion, rejected, unreachable, or any other failure."""
