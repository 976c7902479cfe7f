"""One call's recordings: a snoop on the caller, recorded by Asterisk, handed over.

:class:`CallRecorder` is what ``CallSession.record``, ``record_start`` and
``record_stop`` use; the finished file goes to the app's
:class:`~voxtra.recording.app_recordings.AppRecordings` (spool, sinks). Why a snoop
and not the channel or the bridge: see that module's docstring (measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from voxtra.ari.errors import AriConflict, AriError, AriNotFound
from voxtra.ari.events import (
    AriEvent,
    ChannelDtmfReceived,
    RecordingFailed,
    RecordingFinished,
    RecordingStarted,
)
from voxtra.calls.context import CallContext, expected
from voxtra.calls.control import RecordOptions
from voxtra.calls.playback import play
from voxtra.calls.state import DTMF_KEYS
from voxtra.errors import CallEnded, PlaybackFailed, RecordingError
from voxtra.providers.base import STT
from voxtra.recording.app_recordings import (
    AppRecordings,
    AsteriskRecordingFailed,
    RecordingEndReason,
    RecordingNotStarted,
    RecordingResult,
    Transcriber,
)
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import (
    AudioFormat,
    generate_recording_name,
    validate_format,
    validate_recording_name,
)
from voxtra.recording.sinks import RecordingSink
from voxtra.recording.transcribe import transcribe_file

__all__ = ["CallRecorder"]

logger = logging.getLogger(__name__)

START_TIMEOUT = 10.0
"""Seconds to wait for RecordingStarted (a beep plays first)."""
BEEP_TIMEOUT = 5.0
"""Seconds the beep before a recording may take (``beep=True``)."""
SNOOP_TIMEOUT = 5.0
"""Seconds to wait for the recording's snoop channel to enter the app."""
FINISH_TIMEOUT = 10.0
"""Seconds to wait for a stopped recording to be stored by Asterisk."""


@dataclass(eq=False)
class _Recording:
    name: str
    fmt: AudioFormat
    target: str
    sink: RecordingSink | None
    finished: asyncio.Future[AriEvent]
    snoop_id: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    max_duration: int | None = None
    max_silence: int | None = None
    started_mono: float = field(default_factory=time.monotonic)
    #: when Asterisk reported it finished while the call was up (limits, our key stop)
    finished_mono: float | None = None
    reason: RecordingEndReason | None = None
    key: str | None = None
    key_watch: asyncio.Task[None] | None = None
    transcribe: STT | None = None
    transcript: str | None = None


class CallRecorder:
    """Starts, stops and finalizes the recordings of one call (one at a time)."""

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self._cleanup_added = False
        self._active: _Recording | None = None
        self._finishing: asyncio.Task[str] | None = None
        self._lock = asyncio.Lock()

    @property
    def recording(self) -> str | None:
        """The name of the recording running now, if any."""
        return None if self._active is None else self._active.name

    @property
    def target(self) -> str | None:
        """What is being recorded: ``bridge:<id>`` or ``channel:<snoop id>``."""
        return None if self._active is None else self._active.target

    def _recordings(self) -> AppRecordings:
        recordings = self.context.host.recordings
        if not isinstance(recordings, AppRecordings):
            raise RecordingError("recordings need a started app (VoxtraApp.start())")
        return recordings

    async def start(self, options: RecordOptions) -> str:
        """Start recording; returns the (given or generated) name once Asterisk records.

        ``finish_on_key`` (e.g. ``"#"``, or several keys) stops the recording when the
        caller presses one of them; like ``max_duration``/``max_silence``, the file is
        then delivered at the next ``record_stop()``/``record_start()`` or the hang-up
        (:meth:`record` waits for it). Everything the caller can get wrong (name,
        format, limits, keys, sink) is checked before any request to Asterisk.

        Raises RecordingNotStarted (an AsteriskRecordingFailed) when Asterisk does not
        start it in time, and RecordingError when the spool cannot journal it; nothing
        is recorded then.
        """
        context = self.context
        audio_format = validate_format(options.fmt)
        name = options.name
        name = validate_recording_name(name) if name else generate_recording_name(context.id)
        max_duration, max_silence = options.max_duration, options.max_silence
        for label, value in (("max_duration", max_duration), ("max_silence", max_silence)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise RecordingError(f"{label} must be a whole number of seconds >= 0")
        keys = _check_keys(options.finish_on_key)
        recordings = self._recordings()
        recordings.check_sink(options.sink)
        async with self._lock:
            if self._finishing is not None:  # a stop whose caller was cancelled
                with contextlib.suppress(Exception):
                    await self._finish_shielded("stopped")
            active = self._active
            if active is not None:
                if not _ended_by_itself(active):
                    raise RecordingError(
                        f"call {context.id} is already recording {active.name!r}; "
                        "record_stop() it first"
                    )
                # It hit max_duration/max_silence: deliver it before the next one starts.
                await self._finish_shielded("stopped")
            context.check_alive()
            return await self._start(
                name, audio_format, options.sink, options.beep, max_duration, max_silence, keys
            )

    async def record(self, options: RecordOptions) -> RecordingResult:
        """Record until a key, a time limit, silence or the hang-up; say which one it was.

        Twilio's ``<Record>`` options: ``finish_on_key`` (any of these keys ends it;
        None: keys do not), ``max_duration`` and ``max_silence`` (``call.record()``'s
        ``max_length`` and ``silence_timeout``: whole seconds; None: no limit), ``beep``.
        Returns once the file is durable in the spool (the upload runs in the
        background), with the reason and the key pressed; with
        ``transcribe`` (an STT), also its text, recognised from the fetched file.
        """
        name = await self.start(options)
        active = self._active
        assert active is not None and active.name == name
        active.transcribe = options.transcribe
        # RecordingFinished (a limit, or the key's stop), or CallEnded at the hang-up.
        with contextlib.suppress(Exception):
            await expected(asyncio.shield(active.finished))
        async with self._lock:
            if self._active is active or self._finishing is not None:
                await self._finish_shielded("hangup" if self.context.ended else "stopped")
        assert active.reason is not None
        return RecordingResult(active.name, active.reason, active.key, active.transcript)

    async def _start(
        self,
        name: str,
        audio_format: AudioFormat,
        sink: RecordingSink | None,
        beep: bool,
        max_duration: int | None,
        max_silence: int | None,
        keys: str | None = None,
    ) -> str:
        context = self.context
        if not self._cleanup_added:
            # With the first recording: torn down after what the call made later.
            self._cleanup_added = True
            context.add_cleanup("recording", self.finalize)
        if beep:
            # Asterisk's beep=true plays on the channel it records, here the snoop, which
            # whispers nothing: measured on 22.10.1, neither the caller's phone nor the
            # recording had any sound from it. So the caller's channel plays the beep,
            # and the recording starts after it (as Twilio's playBeep).
            beeping = await play(context, ["sound:beep"])
            try:
                await beeping.wait(BEEP_TIMEOUT)
            except PlaybackFailed as exc:  # a server without the sound: record anyway
                logger.warning("call %s: no beep before the recording: %s", context.id, exc)
            except TimeoutError as exc:
                # Not "record anyway" as for a missing sound: the beep may go on playing
                # into the recording, and an Asterisk this slow may not start it either.
                with contextlib.suppress(AriError):
                    await beeping.stop()
                raise RecordingNotStarted(
                    name,
                    f"the beep before it did not end within {BEEP_TIMEOUT} s (check "
                    "Asterisk's log and load: a beep plays in under a second)",
                ) from exc
        snoop_id = await self._snoop(name)
        target = f"channel:{snoop_id}"
        started = context.expect(
            AriEvent,
            lambda e: (
                isinstance(e, RecordingStarted | RecordingFailed) and e.recording.name == name
            ),
        )
        finished = context.expect(
            AriEvent,
            lambda e: (
                isinstance(e, RecordingFinished | RecordingFailed) and e.recording.name == name
            ),
        )
        recordings = self._recordings()
        posted = journaled = False
        try:
            # Journaled before Asterisk records: a crash from here on cannot strand it.
            await recordings.begin(self._metadata(name, audio_format, datetime.now(UTC)), sink)
            journaled = True
            try:
                await context.ari.channels.record(
                    snoop_id,
                    name,
                    audio_format.name,
                    max_duration=max_duration,
                    max_silence=max_silence,
                    if_exists="fail",
                )
            except AriConflict as exc:
                raise RecordingError(
                    f"Asterisk refused recording {name!r} (a recording with that name "
                    f"exists or is running): {exc.message}"
                ) from exc
            except AriNotFound as exc:
                raise CallEnded(context.id, f"call {context.id} has ended ({exc.message})") from exc
            except AriError as exc:
                raise RecordingError(f"Asterisk refused recording {name!r}: {exc}") from exc
            posted = True
            try:
                event = await context.wait(started, START_TIMEOUT)
            except TimeoutError as exc:  # cancelled below, as any start that fails
                raise RecordingNotStarted(
                    name,
                    f"Asterisk did not start it within {START_TIMEOUT} s (no "
                    "RecordingStarted; check Asterisk's log for the recording, and that "
                    "its recording directory is writable)",
                ) from exc
        except BaseException:
            context.forget(started)
            context.forget(finished)
            discarded = True
            if posted:  # ours is running (or starting): discard it. Never touch another's.
                # Before the snoop goes: its hang-up ends the recording as done, stored,
                # and the cancel then found nothing (404) while the journal was dropped,
                # which left the file in Asterisk for good.
                try:
                    await context.ari.recordings.cancel(name)
                except AriNotFound:
                    pass
                except AriError:
                    discarded = False  # it may get stored: the journal lets a start fetch it
            await self._drop_snoop(snoop_id)
            if journaled and discarded:
                await recordings.abandon(name)
            raise
        if isinstance(event, RecordingFailed):
            context.forget(finished)
            await self._drop_snoop(snoop_id)
            await recordings.abandon(name)
            raise AsteriskRecordingFailed(name, event.recording.cause)
        active = _Recording(
            name,
            audio_format,
            target,
            sink,
            finished,
            snoop_id,
            max_duration=max_duration,
            max_silence=max_silence,
        )

        def _finished(future: asyncio.Future[AriEvent]) -> None:
            if not future.cancelled() and future.exception() is None and not context.ended:
                active.finished_mono = time.monotonic()

        finished.add_done_callback(_finished)
        if keys:
            # Not Asterisk's terminateOn: the recording is on the snoop channel, and DTMF
            # reaches the caller's channel only (audiohooks carry no DTMF). Measured on
            # 22.10.1: terminateOn=# on a snoop, '#' sent 1 s in, the recording ran to
            # its 6 s maxDurationSeconds (6.34 s); on the caller's channel it ended at
            # 1.2 s. So the caller's ChannelDtmfReceived stops it here.
            pressed = context.expect(
                ChannelDtmfReceived,
                lambda e: e.channel.id == context.id and e.digit.upper() in keys,
            )
            active.key_watch = asyncio.ensure_future(self._watch_key(active, pressed))
        self._active = active
        logger.info("call %s: recording %s (%s) started", context.id, name, target)
        return name

    async def _watch_key(self, active: _Recording, pressed: asyncio.Future[AriEvent]) -> None:
        """Stop ``active`` when the caller presses one of its finish keys."""
        try:
            event = await expected(pressed)
        except (asyncio.CancelledError, CallEnded):
            return
        finally:
            self.context.forget(pressed)
        if self._active is not active or active.finished.done() or active.reason is not None:
            return
        assert isinstance(event, ChannelDtmfReceived)
        active.reason, active.key = "finish_on_key", event.digit
        logger.info(
            "call %s: recording %s ended by key %s", self.context.id, active.name, event.digit
        )
        try:
            await self.context.ari.recordings.stop(active.name)
        except AriNotFound:
            pass  # it ended meanwhile (limit, hang-up)
        except AriError as exc:
            logger.warning(
                "call %s: stopping recording %s on its key failed: %s",
                self.context.id,
                active.name,
                exc,
            )

    async def _snoop(self, name: str) -> str:
        """A snoop channel on the caller (both directions), in the app and owned by the
        call, for recording ``name``."""
        context = self.context
        snoop_id = context.host.internal_id("snoop")
        started = context.expect_channel(snoop_id)
        try:
            await context.request(
                context.ari.channels.snoop(
                    context.id, context.host.app_name, spy="both", snoop_id=snoop_id
                )
            )
            try:
                await context.wait_channel(snoop_id, started, timeout=SNOOP_TIMEOUT)
            except TimeoutError as exc:
                raise RecordingNotStarted(
                    name,
                    f"its snoop channel on the caller did not enter the app within "
                    f"{SNOOP_TIMEOUT} s (check Asterisk's log, and that it is not overloaded)",
                ) from exc
        except BaseException:
            await self._drop_snoop(snoop_id)
            raise
        return snoop_id

    async def _drop_snoop(self, snoop_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.context.release_channel(snoop_id)

    async def stop(self) -> str | None:
        """Stop, fetch and hand over to delivery; the name, or None when nothing records.

        Returns once the file is durable in the spool; the upload runs in the
        background. Raises AsteriskRecordingFailed when Asterisk reports a failure, and
        RecordingError when the file cannot be fetched into the spool (it stays in
        Asterisk, journaled, and is fetched again in the background).
        """
        async with self._lock:
            if self._active is None and self._finishing is None:
                return None
            return await self._finish_shielded("stopped")

    async def finalize(self) -> None:
        """At hangup: deliver a recording still running (or being stopped). Never raises."""
        try:
            async with self._lock:
                if self._active is not None or self._finishing is not None:
                    await self._finish_shielded("hangup")
        except Exception:
            logger.exception("call %s: finalizing the recording failed", self.context.id)

    async def _finish_shielded(self, reason: RecordingEndReason) -> str:
        """Finish in a task of its own: a cancelled caller does not lose the recording.

        A finish already under way (its caller was cancelled) is joined, not repeated.
        ``reason`` is what ends it unless it already ended (a key, a limit).
        """
        task = self._finishing
        if task is None:
            active = self._active
            assert active is not None
            if active.reason is None:
                active.reason = _limit_reason(active) if _ended_by_itself(active) else reason
            task = asyncio.ensure_future(self._finish(active))
            self._finishing = task
            task.add_done_callback(self._finish_done)
            self._recordings().track(task)  # app shutdown waits for it
        return await asyncio.shield(task)

    def _finish_done(self, task: asyncio.Task[str]) -> None:
        if self._finishing is task:
            self._finishing = None
        if not task.cancelled() and task.exception() is not None:
            # Seen by whoever awaits it; logged here in case its caller was cancelled.
            logger.debug(
                "call %s: finishing a recording failed: %s", self.context.id, task.exception()
            )

    async def _finish(self, active: _Recording) -> str:
        context = self.context
        try:
            if not _ended_by_itself(active):
                # Stopped unless Asterisk said it finished, also once the call's waiters
                # failed with CallEnded: after a transfer into the dialplan (StasisEnd)
                # the caller's channel lives on, and with it the snoop and its recording,
                # which nothing else ends (it used to wait 10 s here, then stay in
                # Asterisk until the next start). After a hang-up the recording ended
                # with the snoop: 404.
                with contextlib.suppress(AriNotFound):
                    # Asterisk down (killed): wait for it to be back, then stop again
                    # (404 then: the live recording died with it, its file is stored).
                    await context.host.retry_after_outage(
                        functools.partial(context.ari.recordings.stop, active.name)
                    )
            await self._wait_stored(active)
        except AsteriskRecordingFailed:
            self._forget(active)  # nothing was stored: nothing to deliver
            await self._recordings().abandon(active.name)
            raise
        finally:
            if active.key_watch is not None:
                active.key_watch.cancel()
            if active.snoop_id is not None:
                await self._drop_snoop(active.snoop_id)
        context.forget(active.finished)
        ended_at = _ended_at(active)
        # Stored in Asterisk now. Whatever happens next, the recording is not deleted
        # there until a sink confirmed it; if the fetch fails after its retries, the
        # journal stays and the next start fetches it.
        try:
            meta = self._metadata(active.name, active.fmt, active.started_at, ended_at)
            meta = meta.model_copy(update={"end_reason": active.reason})
            await self._recordings().fetch_and_submit(
                meta, active.sink, transcribe=_transcriber(active)
            )
        finally:
            self._forget(active)
        logger.info("call %s: recording %s stored by Asterisk and spooled", context.id, active.name)
        return active.name

    def _forget(self, active: _Recording) -> None:
        self.context.forget(active.finished)
        if self._active is active:
            self._active = None

    async def _wait_stored(self, active: _Recording) -> None:
        """Until Asterisk stored the recording: its event, or (after hangup) ARI itself.

        The call's event waiters end at hangup, and RecordingFinished for a channel
        recording comes right after the hangup, so asking ARI is the fallback.
        """
        ari = self.context.ari
        future = active.finished
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:
            if not future.done():
                await asyncio.wait(
                    {future}, timeout=min(1.0, max(0.0, deadline - time.monotonic()))
                )
            if future.done() and not future.cancelled() and future.exception() is None:
                event = future.result()
                if isinstance(event, RecordingFailed):
                    raise AsteriskRecordingFailed(active.name, event.recording.cause)
                return
            try:
                live = await ari.recordings.get_live(active.name)
            except AriNotFound:
                try:
                    await ari.recordings.get_stored(active.name)
                except AriNotFound:
                    raise RecordingError(
                        f"recording {active.name!r} ended but Asterisk stored no file"
                    ) from None
                return
            if live.state == "failed":
                raise AsteriskRecordingFailed(active.name, live.cause)
            if time.monotonic() >= deadline:
                raise RecordingError(
                    f"recording {active.name!r} was not stored within {FINISH_TIMEOUT} s "
                    f"(state {live.state!r}); it stays in Asterisk"
                )
            await asyncio.sleep(0.1)

    def _metadata(
        self,
        name: str,
        fmt: AudioFormat,
        started_at: datetime,
        ended_at: datetime | None = None,
    ) -> RecordingMetadata:
        context = self.context
        return RecordingMetadata(
            name=name,
            call_id=context.id,
            format=fmt.name,
            caller=context.caller_id or None,
            called_number=context.called_number or None,
            started_at=started_at,
            ended_at=ended_at,
        )


def _transcriber(active: _Recording) -> Transcriber | None:
    """What transcribes ``active``'s file (and keeps the text on it), if it was asked."""
    stt = active.transcribe
    if stt is None:
        return None

    async def transcribe(path: Path) -> str:
        active.transcript = await transcribe_file(path, stt)
        return active.transcript

    return transcribe


def _ended_at(active: _Recording) -> datetime:
    """When ``active`` ended: when Asterisk said it finished while the call was up, else
    now (the hang-up ended it).

    Not the time it is finished here: a recording a limit or its key ended is delivered
    at the next ``record_stop()``/``record_start()`` or the hang-up, and its ``ended_at``
    was that moment (measured: max_duration=1, record_stop() 4 s later gave an ended_at
    4.0 s after started_at for a 1.24 s recording).
    """
    if active.finished_mono is None:
        return datetime.now(UTC)
    return active.started_at + timedelta(seconds=active.finished_mono - active.started_mono)


def _ended_by_itself(active: _Recording) -> bool:
    """Asterisk finished it (max duration/silence) while the call goes on."""
    future = active.finished
    return future.done() and not future.cancelled() and future.exception() is None


def _limit_reason(active: _Recording) -> RecordingEndReason:
    """Which limit Asterisk ended it on: RecordingFinished does not say (22.10.1 sends
    state, duration, no cause), so tell by how long it ran."""
    if active.finished_mono is None:
        return "hangup"  # finished as the call went away
    ran = active.finished_mono - active.started_mono
    if active.max_silence and not (active.max_duration and ran >= active.max_duration - 0.5):
        return "silence_timeout"
    if active.max_duration:
        return "max_length"
    return "hangup"


def _check_keys(keys: str | None) -> str | None:
    if keys is None or keys == "":
        return None
    if not isinstance(keys, str) or any(k not in DTMF_KEYS for k in keys.upper()):
        raise RecordingError(f"finish_on_key must be DTMF keys (0-9 * # A-D), got {keys!r}")
    return keys.upper()
