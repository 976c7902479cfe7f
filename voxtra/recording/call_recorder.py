"""Recording a call end to end: Asterisk records, Voxtra fetches, the spool delivers.

:class:`CallRecorder` is what ``CallSession.record_start`` / ``record_stop`` use. What is
recorded: always a snoop channel on the caller (``spy=both``), i.e. what the caller says
and hears, mixed: the whole conversation, whether or not the call is in a bridge.

* Not the channel itself: Asterisk 22 refuses to add a channel that is recording to a
  bridge (409 "currently recording"), so a direct channel recording would break
  ``call.media()``, transfers and ``bridge_with`` for as long as it runs. The snoop's
  audiohooks stay on the caller's channel when it moves into a bridge, so one
  recording covers the whole call without a restart.
* Not the bridge: measured on 22.10.1, a bridge recording (Asterisk's Recorder channel
  joining the mixing bridge) sometimes came out shorter than it ran (0.2 s of 1.5 s,
  0.9 s of 2 s), while snoop recordings of the same calls were complete every time.

A finished recording is fetched over ARI (``GET /recordings/stored/{name}/file``, so
Asterisk may run on another host) into a work directory inside the spool, handed to
:class:`AppRecordings` (spooled durably, uploaded in the background), and deleted from
Asterisk only after its sink confirmed storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from voxtra.ari.errors import AriConflict, AriError, AriNotFound
from voxtra.ari.events import AriEvent, RecordingFailed, RecordingFinished, RecordingStarted
from voxtra.call import internal_id
from voxtra.errors import CallEnded, ConfigError, RecordingError
from voxtra.recording.delivery import Backoff, DeliveredHook, FailedHook, RecordingDelivery
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import (
    AudioFormat,
    generate_recording_name,
    sanitize_component,
    validate_format,
    validate_recording_name,
)
from voxtra.recording.sinks import RecordingSink
from voxtra.recording.spool import Spool, SpoolEntry

if TYPE_CHECKING:
    from voxtra.ari.client import AriClient
    from voxtra.call import CallSession

__all__ = ["AppRecordings", "CallRecorder", "RecordingFailedError"]

logger = logging.getLogger(__name__)

#: Where recordings fetched from Asterisk wait to be spooled (inside the spool, so the
#: spool takes them over with a hard link instead of a copy).
INCOMING_DIR = ".incoming"
#: Per-call sinks spool under ``<spool>/.sinks/<sink name>`` (the default sink's entries
#: sit in the spool directory itself; hidden names are skipped by its listing).
SINKS_DIR = ".sinks"

START_TIMEOUT = 10.0
"""Seconds to wait for RecordingStarted (a beep plays first)."""
FINISH_TIMEOUT = 10.0
"""Seconds to wait for a stopped recording to be stored by Asterisk."""


class RecordingFailedError(RecordingError):
    """Asterisk reported RecordingFailed; ``cause`` is its reason (may be empty)."""

    def __init__(self, name: str, cause: str | None) -> None:
        super().__init__(f"recording {name!r} failed in Asterisk: {cause or 'no cause given'}")
        self.name = name
        self.cause = cause


# -- the app's deliveries --------------------------------------------------------------


class AppRecordings:
    """The app's recording deliveries: one for the default sink, one per per-call sink.

    Each sink gets its own :class:`RecordingDelivery` and spool directory, so a spooled
    recording is always retried to the sink it was meant for. Sinks are told apart by
    their ``name``: two different sink objects with the same name are refused
    (ConfigError), because after a restart their spooled recordings could not be told
    apart. Per-call sinks' leftovers from an earlier run are resumed when a sink with
    that name is used again (``record_start(sink=...)`` or :meth:`add_sink`).

    After a sink confirmed a recording, its stored copy is deleted from Asterisk, then
    :attr:`on_delivered` runs (once per recording, with ``location`` set).
    """

    def __init__(
        self,
        ari: AriClient,
        default_sink: RecordingSink,
        spool_dir: str | Path,
        *,
        retries: int = 5,
        backoff: Backoff | None = None,
        on_delivered: DeliveredHook | None = None,
        on_failed: FailedHook | None = None,
        delete_from_asterisk: bool = True,
    ) -> None:
        self.ari = ari
        self.spool_dir = Path(spool_dir)
        self.retries = retries
        self.backoff = backoff
        self.on_delivered = on_delivered
        """Runs once per delivered recording (sync or async), after Asterisk's copy is gone."""
        self.on_failed = on_failed
        """Runs when a recording's retries ran out; it stays spooled for the next resume."""
        self.delete_from_asterisk = delete_from_asterisk
        self._deliveries: dict[str, tuple[RecordingSink, RecordingDelivery]] = {}
        self._waiters: dict[str, list[asyncio.Future[RecordingMetadata]]] = {}
        self._recent: OrderedDict[str, RecordingMetadata] = OrderedDict()
        self._closed = False
        self.default = self._make_delivery(default_sink, self.spool_dir)

    @property
    def incoming_dir(self) -> Path:
        return self.spool_dir / INCOMING_DIR

    @property
    def pending(self) -> int:
        """Recordings being delivered or waiting for a retry in this process."""
        return sum(delivery.pending for _, delivery in self._deliveries.values())

    def _make_delivery(self, sink: RecordingSink, directory: Path) -> RecordingDelivery:
        if not isinstance(sink, RecordingSink):
            raise ConfigError(f"{sink!r} is not a recording sink (needs name and deliver())")
        delivery = RecordingDelivery(
            sink,
            directory,
            retries=self.retries,
            backoff=self.backoff,
            on_delivered=self._delivered,
            on_failed=self._failed,
        )
        self._deliveries[sink.name] = (sink, delivery)
        return delivery

    def _lookup(self, sink: RecordingSink | None) -> RecordingDelivery | None:
        if sink is None:
            return self.default
        known = self._deliveries.get(sink.name)
        if known is None:
            return None
        if known[0] is not sink:
            raise ConfigError(
                f"a different recording sink named {sink.name!r} is already in use; give "
                f"each sink a distinct name (e.g. LocalFileSink(dir, name='archive'))"
            )
        return known[1]

    def check_sink(self, sink: RecordingSink | None) -> None:
        """Raise ConfigError now if ``sink`` could not be used (bad object, name clash)."""
        if sink is not None and not isinstance(sink, RecordingSink):
            raise ConfigError(f"{sink!r} is not a recording sink (needs name and deliver())")
        self._lookup(sink)

    async def add_sink(self, sink: RecordingSink) -> RecordingDelivery:
        """The delivery for a per-call sink, created (and its spool resumed) on first use."""
        if self._closed:
            raise RecordingError("recording delivery is closed")
        found = self._lookup(sink)
        if found is not None:
            return found
        directory = self.spool_dir / SINKS_DIR / sanitize_component(sink.name, fallback="sink")
        delivery = self._make_delivery(sink, directory)
        await delivery.resume()
        return delivery

    async def resume(self) -> int:
        """Retry what earlier runs left in the spools of the known sinks; returns how many."""
        count = 0
        for _, delivery in list(self._deliveries.values()):
            count += await delivery.resume()
        waiting = await asyncio.to_thread(self._unclaimed_spools)
        for name, entries in waiting.items():
            logger.warning(
                "%d recording(s) spooled for sink %r wait until that sink is used again "
                "(record_start(sink=...) or app.recordings.add_sink())",
                entries,
                name,
            )
        return count

    def _unclaimed_spools(self) -> dict[str, int]:
        root = self.spool_dir / SINKS_DIR
        if not root.is_dir():
            return {}
        known = {sanitize_component(name, fallback="sink") for name in self._deliveries}
        found: dict[str, int] = {}
        for child in root.iterdir():
            if child.is_dir() and child.name not in known:
                entries = len(Spool(child).entries())
                if entries:
                    found[child.name] = entries
        return found

    async def submit(
        self,
        path: str | Path,
        meta: RecordingMetadata,
        *,
        sink: RecordingSink | None = None,
        move: bool = False,
    ) -> SpoolEntry:
        """Spool ``path`` for ``sink`` (default: the app's); returns once it is durable."""
        delivery = self.default if sink is None else await self.add_sink(sink)
        return await delivery.submit(path, meta, move=move)

    async def spooled(self) -> list[SpoolEntry]:
        """Every entry still in the spools of the known sinks."""
        found: list[SpoolEntry] = []
        for _, delivery in list(self._deliveries.values()):
            found.extend(await delivery.spooled())
        return found

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is in flight; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for _, delivery in list(self._deliveries.values()):
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            if not await delivery.drain(remaining):
                return False
        return True

    async def wait_delivered(self, name: str, timeout: float | None = None) -> RecordingMetadata:
        """The metadata of recording ``name`` once delivered (recent ones are remembered)."""
        if name in self._recent:
            return self._recent[name]
        future: asyncio.Future[RecordingMetadata] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            waiters = self._waiters.get(name, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(name, None)

    async def aclose(self, grace: float = 5.0) -> None:
        """Let uploads finish for ``grace`` s, then stop; unfinished ones stay spooled."""
        self._closed = True
        for _, delivery in list(self._deliveries.values()):
            try:
                await delivery.aclose(grace)
            except Exception:
                logger.exception("closing the recording delivery to %s failed", delivery.sink.name)

    async def _delivered(self, meta: RecordingMetadata) -> None:
        if self.delete_from_asterisk:
            try:
                await self.ari.recordings.delete_stored(meta.name)
            except AriNotFound:
                pass  # not an Asterisk recording, or deleted already
            except AriError as exc:
                logger.warning(
                    "recording %s is stored at %s but could not be deleted from Asterisk: %s",
                    meta.name,
                    meta.location,
                    exc,
                )
        self._recent[meta.name] = meta
        while len(self._recent) > 256:
            self._recent.popitem(last=False)
        for future in self._waiters.pop(meta.name, []):
            if not future.done():
                future.set_result(meta)
        await _call(self.on_delivered, meta)

    async def _failed(self, meta: RecordingMetadata, error: BaseException) -> None:
        hook = self.on_failed
        if hook is not None:
            await _call(lambda m: hook(m, error), meta)


async def _call(
    hook: Callable[[RecordingMetadata], Awaitable[None] | None] | None, meta: RecordingMetadata
) -> None:
    if hook is None:
        return
    try:
        result = hook(meta)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("recording hook %r raised for %s", hook, meta.name)


# -- one call's recorder ---------------------------------------------------------------


@dataclass(eq=False)
class _Recording:
    name: str
    fmt: AudioFormat
    target: str
    sink: RecordingSink | None
    finished: asyncio.Future[AriEvent]
    snoop_id: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class CallRecorder:
    """Starts, stops and finalizes the recordings of one call (one at a time)."""

    def __init__(self, session: CallSession) -> None:
        self.session = session
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
        recordings = getattr(self.session.app, "recordings", None)
        if not isinstance(recordings, AppRecordings):
            raise RecordingError("recordings need a started app (VoxtraApp.start())")
        return recordings

    async def start(
        self,
        name: str = "",
        fmt: str = "wav",
        *,
        sink: RecordingSink | None = None,
        beep: bool = False,
        max_duration: int | None = None,
        max_silence: int | None = None,
    ) -> str:
        """Start recording; returns the (given or generated) name once Asterisk records.

        Everything the caller can get wrong (name, format, limits, sink) is checked
        before any request to Asterisk.
        """
        session = self.session
        audio_format = validate_format(fmt)
        name = validate_recording_name(name) if name else generate_recording_name(session.id)
        for label, value in (("max_duration", max_duration), ("max_silence", max_silence)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise RecordingError(f"{label} must be a whole number of seconds >= 0")
        recordings = self._recordings()
        recordings.check_sink(sink)
        async with self._lock:
            if self._finishing is not None:  # a stop whose caller was cancelled
                with contextlib.suppress(Exception):
                    await self._finish_shielded()
            active = self._active
            if active is not None:
                if not _ended_by_itself(active):
                    raise RecordingError(
                        f"call {session.id} is already recording {active.name!r}; "
                        "record_stop() it first"
                    )
                # It hit max_duration/max_silence: deliver it before the next one starts.
                await self._finish_shielded()
            session._check_alive()
            return await self._start(name, audio_format, sink, beep, max_duration, max_silence)

    async def _start(
        self,
        name: str,
        audio_format: AudioFormat,
        sink: RecordingSink | None,
        beep: bool,
        max_duration: int | None,
        max_silence: int | None,
    ) -> str:
        session, app = self.session, self.session.app
        snoop_id = await self._snoop()
        target = f"channel:{snoop_id}"
        started = session._expect(
            AriEvent,
            lambda e: (
                isinstance(e, RecordingStarted | RecordingFailed) and e.recording.name == name
            ),
        )
        finished = session._expect(
            AriEvent,
            lambda e: (
                isinstance(e, RecordingFinished | RecordingFailed) and e.recording.name == name
            ),
        )
        posted = False
        try:
            try:
                await app.ari.channels.record(
                    snoop_id,
                    name,
                    audio_format.name,
                    max_duration=max_duration,
                    max_silence=max_silence,
                    if_exists="fail",
                    beep=beep,
                )
            except AriConflict as exc:
                raise RecordingError(
                    f"Asterisk refused recording {name!r} (a recording with that name "
                    f"exists or is running): {exc.message}"
                ) from exc
            except AriNotFound as exc:
                raise CallEnded(session.id, f"call {session.id} has ended ({exc.message})") from exc
            except AriError as exc:
                raise RecordingError(f"Asterisk refused recording {name!r}: {exc}") from exc
            posted = True
            event = await session._await_event(started, START_TIMEOUT)
        except BaseException:
            session._cancel_waiter(started)
            session._cancel_waiter(finished)
            await self._drop_snoop(snoop_id)
            if posted:  # ours is running (or starting): discard it. Never touch another's.
                with contextlib.suppress(AriError):
                    await app.ari.recordings.cancel(name)
            raise
        if isinstance(event, RecordingFailed):
            session._cancel_waiter(finished)
            await self._drop_snoop(snoop_id)
            raise RecordingFailedError(name, event.recording.cause)
        self._active = _Recording(name, audio_format, target, sink, finished, snoop_id)
        logger.info("call %s: recording %s (%s) started", session.id, name, target)
        return name

    async def _snoop(self) -> str:
        """A snoop channel on the caller (both directions), in the app and owned by the call."""
        session, app = self.session, self.session.app
        snoop_id = internal_id("snoop")
        started = app.expect_internal(snoop_id, session)
        try:
            await session._ari(
                app.ari.channels.snoop(session.id, app.app_name, spy="both", snoop_id=snoop_id)
            )
            await app.wait_internal(snoop_id, started, timeout=5.0)
        except BaseException:
            await self._drop_snoop(snoop_id)
            raise
        return snoop_id

    async def _drop_snoop(self, snoop_id: str) -> None:
        app = self.session.app
        with contextlib.suppress(AriError):
            await app.ari.channels.hangup(snoop_id)
        app._forget_internal(snoop_id)
        self.session._channels.discard(snoop_id)

    async def stop(self) -> str | None:
        """Stop, fetch and hand over to delivery; the name, or None when nothing records.

        Returns once the file is durable in the spool; the upload runs in the
        background. Raises RecordingFailedError when Asterisk reports a failure.
        """
        async with self._lock:
            if self._active is None and self._finishing is None:
                return None
            return await self._finish_shielded()

    async def finalize(self) -> None:
        """At hangup: deliver a recording still running (or being stopped). Never raises."""
        try:
            async with self._lock:
                if self._active is not None or self._finishing is not None:
                    await self._finish_shielded()
        except Exception:
            logger.exception("call %s: finalizing the recording failed", self.session.id)

    async def _finish_shielded(self) -> str:
        """Finish in a task of its own: a cancelled caller does not lose the recording.

        A finish already under way (its caller was cancelled) is joined, not repeated.
        """
        task = self._finishing
        if task is None:
            active = self._active
            assert active is not None
            task = asyncio.ensure_future(self._finish(active))
            self._finishing = task
            task.add_done_callback(self._finish_done)
        return await asyncio.shield(task)

    def _finish_done(self, task: asyncio.Task[str]) -> None:
        if self._finishing is task:
            self._finishing = None
        if not task.cancelled() and task.exception() is not None:
            # Seen by whoever awaits it; logged here in case its caller was cancelled.
            logger.debug(
                "call %s: finishing a recording failed: %s", self.session.id, task.exception()
            )

    async def _finish(self, active: _Recording) -> str:
        session, app = self.session, self.session.app
        try:
            if not active.finished.done():
                with contextlib.suppress(AriNotFound):
                    await app.ari.recordings.stop(active.name)
            await self._wait_stored(active)
        except RecordingFailedError:
            self._forget(active)  # nothing was stored: nothing to deliver
            raise
        finally:
            if active.snoop_id is not None:
                await self._drop_snoop(active.snoop_id)
        session._cancel_waiter(active.finished)
        ended_at = datetime.now(UTC)
        # Stored in Asterisk now. Whatever happens next, the recording is not deleted
        # there until a sink confirmed it; a fetch failure says so and gives up here.
        try:
            path = await self._fetch(active)
            meta = RecordingMetadata(
                name=active.name,
                call_id=session.id,
                format=active.fmt.name,
                caller=session.caller_id or None,
                called_number=session.called_number or None,
                started_at=active.started_at,
                ended_at=ended_at,
                local_path=path,
            )
            await self._recordings().submit(path, meta, sink=active.sink, move=True)
        finally:
            self._forget(active)
        logger.info("call %s: recording %s stored by Asterisk and spooled", session.id, active.name)
        return active.name

    def _forget(self, active: _Recording) -> None:
        self.session._cancel_waiter(active.finished)
        if self._active is active:
            self._active = None

    async def _wait_stored(self, active: _Recording) -> None:
        """Until Asterisk stored the recording: its event, or (after hangup) ARI itself.

        The call's event waiters end at hangup, and RecordingFinished for a channel
        recording comes right after the hangup, so asking ARI is the fallback.
        """
        ari = self.session.app.ari
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
                    raise RecordingFailedError(active.name, event.recording.cause)
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
                raise RecordingFailedError(active.name, live.cause)
            if time.monotonic() >= deadline:
                raise RecordingError(
                    f"recording {active.name!r} was not stored within {FINISH_TIMEOUT} s "
                    f"(state {live.state!r}); it stays in Asterisk"
                )
            await asyncio.sleep(0.1)

    async def _fetch(self, active: _Recording) -> Path:
        recordings = self._recordings()
        directory = recordings.incoming_dir
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        path = directory / f"{active.name}.{active.fmt.extension}"
        try:
            await self.session.app.ari.recordings.download(active.name, path)
        except AriError as exc:
            raise RecordingError(
                f"cannot fetch recording {active.name!r} from Asterisk (it stays there): {exc}"
            ) from exc
        return path


def _ended_by_itself(active: _Recording) -> bool:
    """Asterisk finished it (max duration/silence) while the call goes on."""
    future = active.finished
    return future.done() and not future.cancelled() and future.exception() is None
