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
Asterisk only after its sink confirmed storage. Each recording is journaled in that
work directory before Asterisk starts it, so a crash or shutdown at any step leaves
something :meth:`AppRecordings.resume` finishes at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from voxtra.ari.errors import (
    AriConflict,
    AriConnectionError,
    AriError,
    AriNotFound,
    AriServerError,
)
from voxtra.ari.events import (
    AriEvent,
    ChannelDtmfReceived,
    RecordingFailed,
    RecordingFinished,
    RecordingStarted,
)
from voxtra.call import internal_id
from voxtra.errors import CallEnded, ConfigError, RecordingError
from voxtra.recording.delivery import (
    SLOW_BACKOFF,
    Backoff,
    DeliveredHook,
    FailedHook,
    RecordingDelivery,
)
from voxtra.recording.metadata import RecordingMetadata, finalize_wav_header
from voxtra.recording.naming import (
    SUPPORTED_FORMATS,
    AudioFormat,
    generate_recording_name,
    sanitize_component,
    validate_format,
    validate_recording_name,
)
from voxtra.recording.sinks import RecordingSink, fsync_dir, mkdir_durable
from voxtra.recording.spool import Spool, SpoolEntry

if TYPE_CHECKING:
    from voxtra.ari.client import AriClient
    from voxtra.call import CallSession

__all__ = [
    "AppRecordings",
    "CallRecorder",
    "RecordingEndReason",
    "RecordingFailedError",
    "RecordingResult",
]

logger = logging.getLogger(__name__)

#: Where recordings fetched from Asterisk wait to be spooled (inside the spool, so the
#: spool takes them over with a hard link instead of a copy).
INCOMING_DIR = ".incoming"
#: Per-call sinks spool under ``<spool>/.sinks/<sink name>`` (the default sink's entries
#: sit in the spool directory itself; hidden names are skipped by its listing).
SINKS_DIR = ".sinks"
#: ``<spool>/.delivered/<name>``: delivered, but Asterisk's copy could not be deleted yet.
DELIVERED_DIR = ".delivered"
_JOURNAL_SUFFIX = ".meta.json"

START_TIMEOUT = 10.0
"""Seconds to wait for RecordingStarted (a beep plays first)."""
FINISH_TIMEOUT = 10.0
"""Seconds to wait for a stopped recording to be stored by Asterisk."""


RecordingEndReason = Literal["finish_on_key", "max_length", "silence_timeout", "stopped", "hangup"]
"""What ended a recording (``RecordingMetadata.end_reason``, ``RecordingResult.reason``)."""
_DTMF_KEYS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What :meth:`CallRecorder.record` (``CallSession.record()``) returns."""

    name: str
    reason: RecordingEndReason
    key: str | None = None
    """The key that ended it, for ``finish_on_key``."""


class RecordingFailedError(RecordingError):
    """Asterisk reported RecordingFailed; ``cause`` is its reason (may be empty)."""

    def __init__(self, name: str, cause: str | None) -> None:
        super().__init__(f"recording {name!r} failed in Asterisk: {cause or 'no cause given'}")
        self.name = name
        self.cause = cause


# -- the app's deliveries --------------------------------------------------------------

#: ``<call id>-<UTC time>-<12 hex>``, as :func:`generate_recording_name` makes them.
_GENERATED_NAME = re.compile(r"(?P<call>.+)-(?P<stamp>\d{8}T\d{6}Z)-[0-9a-f]{12}")


class _Journal(BaseModel):
    """``.incoming/<name>.meta.json``: a recording this spool started and has not spooled.

    Written (fsynced) *before* Asterisk is asked to record, so whatever happens later
    (crash while recording, while fetching, before spooling) the next start knows the
    recording exists, which sink it is for, and its call's details.
    """

    metadata: RecordingMetadata
    #: the per-call sink's name; None for the app's default sink
    sink: str | None = None


def metadata_from_name(name: str, fmt: str) -> RecordingMetadata:
    """What a stored recording's name tells about it (call id and start time, if generated)."""
    match = _GENERATED_NAME.fullmatch(name)
    if match is None:
        return RecordingMetadata(name=name, call_id=name, format=fmt)
    started = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return RecordingMetadata(name=name, call_id=match["call"], format=fmt, started_at=started)


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

    Nothing is stranded: every recording is journaled in ``<spool>/.incoming`` before
    Asterisk starts it, and :meth:`resume` (at start) finishes whatever an earlier run
    left there: a fetched file is spooled, a missing or partial one fetched again.
    Stored recordings no spool here started are left alone unless
    ``recover_unclaimed`` (another process may be delivering them).
    """

    def __init__(
        self,
        ari: AriClient,
        default_sink: RecordingSink,
        spool_dir: str | Path,
        *,
        retries: int = 5,
        backoff: Backoff | None = None,
        slow_backoff: Backoff | None = None,
        on_delivered: DeliveredHook | None = None,
        on_failed: FailedHook | None = None,
        delete_from_asterisk: bool = True,
        recover_unclaimed: bool = False,
        read_timeout: float | None = None,
    ) -> None:
        self.ari = ari
        self.spool_dir = Path(spool_dir)
        self.retries = retries
        self.backoff = backoff
        self.slow_backoff = slow_backoff
        self.on_delivered = on_delivered
        """Runs once per delivered recording (sync or async), after Asterisk's copy is gone."""
        self.on_failed = on_failed
        """Runs once when a recording's fast retries ran out; it stays spooled and is
        retried on the slow backoff while the app runs (and at the next start)."""
        self.delete_from_asterisk = delete_from_asterisk
        self.recover_unclaimed = recover_unclaimed
        """resume() also fetches stored recordings with generated names that no journal
        here knows (e.g. spooled by a version without journals). Off by default: on an
        Asterisk shared by several apps they may be another process's."""
        self.read_timeout = read_timeout
        """Seconds a recording download may go without data (default: the ARI timeout)."""
        self._deliveries: dict[str, tuple[RecordingSink, RecordingDelivery]] = {}
        self._waiters: dict[str, list[asyncio.Future[RecordingMetadata]]] = {}
        self._recent: OrderedDict[str, RecordingMetadata] = OrderedDict()
        #: recordings this process is recording or fetching (their journals are not leftovers)
        self._in_flight: set[str] = set()
        #: finishing recordings and recovery fetches; drain/aclose wait for them
        self._tasks: set[asyncio.Future[Any]] = set()
        #: fetches past their fast retries (Asterisk unreachable), retried on the slow
        #: backoff while the app runs; drain does not wait for them, aclose stops them
        self._slow_fetches: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self.default = self._make_delivery(default_sink, self.spool_dir)

    @property
    def incoming_dir(self) -> Path:
        return self.spool_dir / INCOMING_DIR

    @property
    def delivered_dir(self) -> Path:
        return self.spool_dir / DELIVERED_DIR

    @property
    def pending(self) -> int:
        """Recordings being fetched, delivered or waiting for a retry in this process."""
        fetching = sum(1 for task in self._tasks if not task.done()) + len(self._slow_fetches)
        return fetching + sum(delivery.pending for _, delivery in self._deliveries.values())

    def _make_delivery(self, sink: RecordingSink, directory: Path) -> RecordingDelivery:
        if not isinstance(sink, RecordingSink):
            raise ConfigError(f"{sink!r} is not a recording sink (needs name and deliver())")
        delivery = RecordingDelivery(
            sink,
            directory,
            retries=self.retries,
            backoff=self.backoff,
            slow_backoff=self.slow_backoff,
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

    def _sink_dir(self, sink_name: str) -> Path:
        return self.spool_dir / SINKS_DIR / sanitize_component(sink_name, fallback="sink")

    def check_sink(self, sink: RecordingSink | None) -> None:
        """Raise ConfigError now if ``sink`` could not be used (bad object, name clash)."""
        if sink is not None and not isinstance(sink, RecordingSink):
            raise ConfigError(f"{sink!r} is not a recording sink (needs name and deliver())")
        self._lookup(sink)

    async def add_sink(self, sink: RecordingSink) -> RecordingDelivery:
        """The delivery for a per-call sink, created (and its leftovers resumed) on first use."""
        if self._closed:
            raise RecordingError("recording delivery is closed")
        found = self._lookup(sink)
        if found is not None:
            return found
        delivery = self._make_delivery(sink, self._sink_dir(sink.name))
        await delivery.open()  # its client before its first upload (see RecordingDelivery.open)
        await self._recover_incoming({sink.name})
        await delivery.resume()
        return delivery

    async def resume(self) -> int:
        """Finish what earlier runs left (call at start); returns how many were scheduled.

        Journaled recordings in ``.incoming``: a complete fetched file is spooled, a
        partial or missing one is fetched from Asterisk again (in the background).
        Then every spooled entry of the known sinks is scheduled for delivery. Stored
        recordings already delivered whose deletion from Asterisk failed are deleted
        now (never delivered again).
        """
        for _, delivery in list(self._deliveries.values()):
            await delivery.open()  # clients made now, before calls: not by a first upload
        fetches = await self._recover_incoming({name for name in self._deliveries})
        count = fetches
        for _, delivery in list(self._deliveries.values()):
            count += await delivery.resume()
        count += await self._recover_from_asterisk()
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
        found: dict[str, int] = {}
        root = self.spool_dir / SINKS_DIR
        known = {sanitize_component(name, fallback="sink") for name in self._deliveries}
        if root.is_dir():
            for child in root.iterdir():
                if child.is_dir() and child.name not in known:
                    entries = len(Spool(child).entries())
                    if entries:
                        found[child.name] = entries
        for _name, journal in self._read_journals():
            if journal.sink is not None and journal.sink not in self._deliveries:
                key = sanitize_component(journal.sink, fallback="sink")
                found[key] = found.get(key, 0) + 1
        return found

    async def submit(
        self,
        path: str | Path,
        meta: RecordingMetadata,
        *,
        sink: RecordingSink | None = None,
        move: bool = False,
    ) -> SpoolEntry:
        """Spool ``path`` for ``sink`` (default: the app's); returns once it is durable.

        After :meth:`aclose` the recording is still spooled (for the next start), never
        refused: a recording that finished during shutdown is not lost.
        """
        delivery = self._lookup(sink)
        if delivery is None:
            assert sink is not None
            if self._closed:
                spool = Spool(self._sink_dir(sink.name))
                entry = await asyncio.to_thread(spool.add, Path(path), meta, move=move)
                logger.warning(
                    "recording %s arrived after shutdown began; spooled for the next start",
                    meta.name,
                )
                return entry
            delivery = await self.add_sink(sink)
        return await delivery.submit(path, meta, move=move)

    async def spooled(self) -> list[SpoolEntry]:
        """Every entry still in the spools of the known sinks."""
        found: list[SpoolEntry] = []
        for _, delivery in list(self._deliveries.values()):
            found.extend(await delivery.spooled())
        return found

    # -- fetching from Asterisk --------------------------------------------------------
    async def begin(self, meta: RecordingMetadata, sink: RecordingSink | None) -> None:
        """Journal a recording about to be started in Asterisk (durable before it starts)."""
        self._in_flight.add(meta.name)
        try:
            await asyncio.to_thread(
                self._write_journal, _Journal(metadata=meta, sink=_sink_key(sink))
            )
        except BaseException:
            self._in_flight.discard(meta.name)
            raise

    async def abandon(self, name: str) -> None:
        """Forget a journaled recording Asterisk never stored (failed or cancelled)."""
        self._in_flight.discard(name)
        await asyncio.to_thread(self._drop_incoming, name)

    def track(self, task: asyncio.Future[Any]) -> None:
        """Have :meth:`drain` and :meth:`aclose` wait for ``task`` (a finishing recording)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fetch_and_submit(
        self, meta: RecordingMetadata, sink: RecordingSink | None
    ) -> SpoolEntry:
        """Fetch stored recording ``meta.name`` from Asterisk and spool it for ``sink``.

        Transport failures (reset, stall, Asterisk 5xx, local I/O) are retried with the
        delivery's backoff. If it still fails (RecordingError), the journal stays and,
        for an unreachable Asterisk, the fetch goes on in the background on the slow
        backoff while the app runs (and at the next start); Asterisk keeps its copy
        until a sink confirmed.
        """
        return await self._fetch_and_submit(meta, sink, self.retries, later=True)

    async def _fetch_and_submit(
        self, meta: RecordingMetadata, sink: RecordingSink | None, retries: int, *, later: bool
    ) -> SpoolEntry:
        name = meta.name
        self._in_flight.add(name)
        try:
            await asyncio.to_thread(
                self._write_journal, _Journal(metadata=meta, sink=_sink_key(sink))
            )
            path = self._incoming_audio(name, meta.format)
            try:
                await self._download(name, path, retries)
            except AriError as exc:
                transient = isinstance(exc, AriConnectionError | AriServerError)
                if later and transient and not self._closed:
                    self._fetch_later(meta, sink, exc)
                    raise RecordingError(
                        f"cannot fetch recording {name!r} from Asterisk yet (it stays "
                        f"there; retried in the background): {exc}"
                    ) from exc
                raise RecordingError(
                    f"cannot fetch recording {name!r} from Asterisk (it stays there): {exc}"
                ) from exc
            await self._finish_header(name, meta.format, path)
            meta = meta.model_copy(update={"local_path": path})
            entry = await self.submit(path, meta, sink=sink, move=True)
            await asyncio.to_thread(self._drop_incoming, name)
            return entry
        finally:
            if name not in self._slow_fetches:  # it goes on in the background
                self._in_flight.discard(name)

    def _fetch_later(
        self, meta: RecordingMetadata, sink: RecordingSink | None, error: BaseException
    ) -> None:
        """Keep fetching ``meta`` on the slow backoff (ERROR once now, INFO when done)."""
        backoff = self.slow_backoff or SLOW_BACKOFF
        logger.error(
            "recording %s could not be fetched from Asterisk after %d attempt(s); it stays "
            "there, journaled, and is fetched again every %.0f s at most while the app "
            "runs: %s",
            meta.name,
            self.retries + 1,
            backoff.cap,
            error,
        )
        self._in_flight.add(meta.name)
        task = asyncio.create_task(
            self._fetch_slowly(meta, sink, backoff), name="voxtra-recording-fetch-later"
        )
        self._slow_fetches[meta.name] = task

        def _done(finished: asyncio.Task[None]) -> None:
            if self._slow_fetches.get(meta.name) is finished:
                del self._slow_fetches[meta.name]
                self._in_flight.discard(meta.name)

        task.add_done_callback(_done)

    async def _fetch_slowly(
        self, meta: RecordingMetadata, sink: RecordingSink | None, backoff: Backoff
    ) -> None:
        failures = 0
        while True:
            await asyncio.sleep(backoff.delay(failures))
            failures += 1
            try:
                await self._fetch_and_submit(meta, sink, 0, later=False)
            except RecordingError as exc:
                cause = exc.__cause__
                if isinstance(cause, AriConnectionError | AriServerError):
                    logger.debug("fetching recording %s again failed: %s", meta.name, exc)
                    continue
                logger.error(
                    "fetching recording %s again failed; it stays journaled for the next start: %s",
                    meta.name,
                    exc,
                )
                return
            except Exception:
                logger.exception(
                    "fetching recording %s again crashed; it stays journaled", meta.name
                )
                return
            logger.info(
                "recording %s fetched from Asterisk after %d more attempt(s) and spooled",
                meta.name,
                failures,
            )
            return

    @staticmethod
    async def _finish_header(name: str, fmt: str, path: Path) -> None:
        """Give a WAV that Asterisk was killed while writing its sizes (see
        :func:`finalize_wav_header`), so every reader takes the audio that reached disk."""
        if validate_format(fmt).bytes_per_second is not None:
            return  # headerless: nothing to finish
        try:
            fixed = await asyncio.to_thread(finalize_wav_header, path)
        except (OSError, RecordingError) as exc:
            logger.warning("recording %s: cannot check its WAV header: %s", name, exc)
            return
        if fixed:
            logger.warning(
                "recording %s: Asterisk never finished its WAV header (stopped while "
                "recording?); its sizes were written from the file",
                name,
            )

    async def _download(self, name: str, path: Path, retries: int) -> None:
        backoff = self.backoff or Backoff()
        failures = 0
        while True:
            try:
                await self.ari.recordings.download(name, path, read_timeout=self.read_timeout)
                return
            except (AriConnectionError, AriServerError, OSError, TimeoutError) as exc:
                # AriConnectionError covers aiohttp's transport errors and stalls; OSError
                # is our own disk. Both pass; a 4xx (e.g. 404) will not, so it is not retried.
                if failures >= retries:
                    raise
                delay = backoff.delay(failures)
                failures += 1
                logger.warning(
                    "fetching recording %s from Asterisk failed (attempt %d), retrying in "
                    "%.2f s: %s",
                    name,
                    failures,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    # -- recovery of what an earlier run left ------------------------------------------
    async def _recover_incoming(self, sinks: set[str]) -> int:
        """Settle journals for ``sinks`` (names; the default is always included)."""
        scheduled = 0
        for name, journal in await asyncio.to_thread(self._read_journals):
            if name in self._in_flight:
                continue
            if journal.sink is None:
                sink: RecordingSink | None = None
                delivery = self.default
            elif journal.sink in sinks and journal.sink in self._deliveries:
                sink, delivery = self._deliveries[journal.sink]
            else:
                continue  # waits for its sink
            try:
                settled = await asyncio.to_thread(self._settle_incoming, journal, delivery)
            except (OSError, RecordingError) as exc:
                logger.error(
                    "cannot recover recording %s from %s: %s", name, self.incoming_dir, exc
                )
                continue
            if not settled:
                self._in_flight.add(name)  # a second resume() must not fetch it twice
                self._spawn(self._refetch(journal.metadata, sink))
                scheduled += 1
        if scheduled:
            logger.info("fetching %d recording(s) an earlier run did not fetch", scheduled)
        return scheduled

    def _settle_incoming(self, journal: _Journal, delivery: RecordingDelivery) -> bool:
        """Spool a leftover if its file is here (True), or say it needs fetching (False)."""
        meta = journal.metadata
        name = meta.name
        if any(e.metadata.name == name for e in delivery.spool.entries()) or self._is_marked(name):
            self._drop_incoming(name)  # spooled (or delivered) before the crash
            return True
        audio = self._incoming_audio(name, meta.format)
        if audio.is_file():  # downloads are renamed into place complete, so it is whole
            meta = meta.model_copy(update={"local_path": audio})
            entry = delivery.spool.add(audio, meta, move=True)
            logger.info("recording %s recovered from %s as %s", name, self.incoming_dir, entry.id)
            self._drop_incoming(name)
            return True
        partial = audio.with_name(audio.name + ".part")
        partial.unlink(missing_ok=True)
        return False

    async def _refetch(self, meta: RecordingMetadata, sink: RecordingSink | None) -> None:
        try:
            await self.fetch_and_submit(meta, sink)
        except RecordingError as exc:
            if not isinstance(exc.__cause__, AriNotFound):
                logger.error("recovering recording %s failed: %s", meta.name, exc)
                return
            try:
                live = await self.ari.recordings.get_live(meta.name)
            except AriNotFound:
                logger.error(
                    "recording %s was started but Asterisk has no file of it; giving it up",
                    meta.name,
                )
                await asyncio.to_thread(self._drop_incoming, meta.name)
                return
            except AriError as err:
                logger.warning("cannot ask Asterisk about recording %s: %s", meta.name, err)
                return
            logger.warning(
                "recording %s is still %s in Asterisk; fetched at a later start",
                meta.name,
                live.state or "live",
            )

    async def _recover_from_asterisk(self) -> int:
        """Delete delivered ones Asterisk still holds; fetch unclaimed ones if asked to."""
        markers = await asyncio.to_thread(self._markers)
        if not markers and not self.recover_unclaimed:
            return 0
        try:
            stored = await self.ari.recordings.list_stored()
        except AriError as exc:
            logger.warning("cannot list Asterisk's stored recordings: %s", exc)
            return 0
        names = {rec.name for rec in stored}
        for name in markers:
            if name in names:
                try:
                    await self.ari.recordings.delete_stored(name)
                except AriNotFound:
                    pass
                except AriError as exc:
                    logger.warning("delivered recording %s still not deleted: %s", name, exc)
                    continue
            await asyncio.to_thread(self._unmark, name)
        if not self.recover_unclaimed:
            return 0
        known = set(self._in_flight) | markers
        known.update(name for name, _ in await asyncio.to_thread(self._read_journals))
        known.update(entry.metadata.name for entry in await self.spooled())
        if (self.spool_dir / SINKS_DIR).is_dir():  # per-call sinks not in use yet
            for child in (self.spool_dir / SINKS_DIR).iterdir():
                known.update(e.metadata.name for e in Spool(child).entries())
        count = 0
        for rec in stored:
            if rec.name in known or _GENERATED_NAME.fullmatch(rec.name) is None:
                continue
            if rec.format not in SUPPORTED_FORMATS:
                continue
            try:
                await self.ari.recordings.get_live(rec.name)
                continue  # still being recorded: its call delivers it
            except AriNotFound:
                pass
            except AriError:
                continue
            try:
                meta = metadata_from_name(rec.name, rec.format)
            except RecordingError:
                continue
            self._in_flight.add(rec.name)
            self._spawn(self._refetch(meta, None))
            count += 1
        if count:
            logger.info("fetching %d stored recording(s) no spool here held", count)
        return count

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.track(asyncio.create_task(coro, name="voxtra-recording-recover"))

    # -- files in .incoming and .delivered (blocking: run in a worker thread) ----------
    def _incoming_audio(self, name: str, fmt: str) -> Path:
        return self.incoming_dir / f"{name}.{validate_format(fmt).extension}"

    def _journal_path(self, name: str) -> Path:
        return self.incoming_dir / f"{name}{_JOURNAL_SUFFIX}"

    def _write_journal(self, journal: _Journal) -> None:
        mkdir_durable(self.incoming_dir)
        _write_durably(self._journal_path(journal.metadata.name), journal.model_dump_json())

    def _read_journals(self) -> list[tuple[str, _Journal]]:
        """Journals in ``.incoming``, plus audio a journal-less earlier version left there."""
        directory = self.incoming_dir
        if not directory.is_dir():
            return []
        found: dict[str, _Journal] = {}
        audio: list[Path] = []
        for child in sorted(directory.iterdir()):
            if child.name.endswith(_JOURNAL_SUFFIX):
                try:
                    journal = _Journal.model_validate_json(child.read_bytes())
                except (OSError, ValueError, RecordingError) as exc:
                    logger.error("unreadable recording journal %s left alone: %s", child, exc)
                    continue
                if child.name != f"{journal.metadata.name}{_JOURNAL_SUFFIX}":
                    logger.error("recording journal %s names another recording; left alone", child)
                    continue
                found[journal.metadata.name] = journal
            elif not child.name.startswith("."):
                audio.append(child)
        for path in audio:
            stem, _, ext = path.name.removesuffix(".part").rpartition(".")
            if stem in found or ext not in SUPPORTED_FORMATS:
                continue
            try:
                found[stem] = _Journal(metadata=metadata_from_name(stem, ext))
            except RecordingError:
                logger.error("file %s in %s is not a recording; left alone", path, directory)
        return list(found.items())

    def _drop_incoming(self, name: str) -> None:
        directory = self.incoming_dir
        if not directory.is_dir():
            return
        # Exact names only: "a.meta.json" is recording a's journal, not a file of "a.meta".
        doomed = [self._journal_path(name)]
        for fmt in SUPPORTED_FORMATS.values():
            audio = directory / f"{name}.{fmt.extension}"
            doomed += [audio, audio.with_name(audio.name + ".part")]
        for path in doomed:
            path.unlink(missing_ok=True)
        fsync_dir(directory)

    def _mark(self, name: str) -> None:
        mkdir_durable(self.delivered_dir)
        _write_durably(self.delivered_dir / name, "")

    def _unmark(self, name: str) -> None:
        (self.delivered_dir / name).unlink(missing_ok=True)

    def _is_marked(self, name: str) -> bool:
        return (self.delivered_dir / name).is_file()

    def _markers(self) -> set[str]:
        directory = self.delivered_dir
        if not directory.is_dir():
            return set()
        return {child.name for child in directory.iterdir() if not child.name.startswith(".")}

    # -- shutdown ------------------------------------------------------------------------
    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is fetched or delivered; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        while True:
            tasks = [task for task in self._tasks if not task.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=left())
                if any(not task.done() for task in tasks):
                    return False
            for _, delivery in list(self._deliveries.values()):
                if not await delivery.drain(left()):
                    return False
            # A fetch may have finished into a delivery meanwhile: check both again.
            if not any(not task.done() for task in self._tasks) and self.pending == 0:
                return True
            if (
                self._slow_fetches
                and not any(not task.done() for task in self._tasks)
                and all(d.pending == d.waiting for _, d in self._deliveries.values())
            ):
                return False  # what is left waits for Asterisk to answer again

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
        """Let fetches and uploads finish for ``grace`` s, then stop.

        Nothing is lost: a recording still being fetched when the grace ends keeps its
        journal (fetched again at the next start); one that is spooled but not yet
        delivered stays spooled; one that finishes after this is spooled, not refused.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        slow = list(self._slow_fetches.values())
        for waiting in slow:  # waiting for Asterisk: their journals bring them back at start
            waiting.cancel()
        if slow:
            await asyncio.wait(slow)
        tasks = [task for task in self._tasks if not task.done()]
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=grace)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
                logger.info(
                    "%d recording fetch(es) interrupted by shutdown; fetched at the next start",
                    len(unfinished),
                )
        self._closed = True
        for _, delivery in list(self._deliveries.values()):
            try:
                await delivery.aclose(max(0.0, deadline - loop.time()))
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
                    "recording %s is stored at %s but could not be deleted from Asterisk "
                    "(retried at the next start): %s",
                    meta.name,
                    meta.location,
                    exc,
                )
                # Before the spool entry goes: the next start must not deliver it again.
                try:
                    await asyncio.to_thread(self._mark, meta.name)
                except OSError as err:
                    logger.error("cannot mark recording %s as delivered: %s", meta.name, err)
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


def _sink_key(sink: RecordingSink | None) -> str | None:
    return None if sink is None else sink.name


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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
    max_duration: int | None = None
    max_silence: int | None = None
    started_mono: float = field(default_factory=time.monotonic)
    #: when Asterisk reported it finished while the call was up (limits, our key stop)
    finished_mono: float | None = None
    reason: RecordingEndReason | None = None
    key: str | None = None
    key_watch: asyncio.Task[None] | None = None


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
        finish_on_key: str | None = None,
    ) -> str:
        """Start recording; returns the (given or generated) name once Asterisk records.

        ``finish_on_key`` (e.g. ``"#"``, or several keys) stops the recording when the
        caller presses one of them; like ``max_duration``/``max_silence``, the file is
        then delivered at the next ``record_stop()``/``record_start()`` or the hang-up
        (:meth:`record` waits for it). Everything the caller can get wrong (name,
        format, limits, keys, sink) is checked before any request to Asterisk.
        """
        session = self.session
        audio_format = validate_format(fmt)
        name = validate_recording_name(name) if name else generate_recording_name(session.id)
        for label, value in (("max_duration", max_duration), ("max_silence", max_silence)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise RecordingError(f"{label} must be a whole number of seconds >= 0")
        keys = _check_keys(finish_on_key)
        recordings = self._recordings()
        recordings.check_sink(sink)
        async with self._lock:
            if self._finishing is not None:  # a stop whose caller was cancelled
                with contextlib.suppress(Exception):
                    await self._finish_shielded("stopped")
            active = self._active
            if active is not None:
                if not _ended_by_itself(active):
                    raise RecordingError(
                        f"call {session.id} is already recording {active.name!r}; "
                        "record_stop() it first"
                    )
                # It hit max_duration/max_silence: deliver it before the next one starts.
                await self._finish_shielded("stopped")
            session._check_alive()
            return await self._start(
                name, audio_format, sink, beep, max_duration, max_silence, keys
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
        """Record until a key, a time limit, silence or the hang-up; say which one it was.

        Twilio's ``<Record>`` options: ``finish_on_key`` (any of these keys ends it;
        None: keys do not), ``max_length`` and ``silence_timeout`` (whole seconds;
        None: no limit), ``beep``. Returns once the file is durable in the spool (the
        upload runs in the background), with the reason and the key pressed.
        """
        name = await self.start(
            name,
            fmt,
            sink=sink,
            beep=beep,
            max_duration=max_length,
            max_silence=silence_timeout,
            finish_on_key=finish_on_key,
        )
        active = self._active
        assert active is not None and active.name == name
        # RecordingFinished (a limit, or the key's stop), or CallEnded at the hang-up.
        with contextlib.suppress(Exception):
            await asyncio.shield(active.finished)
        async with self._lock:
            if self._active is active or self._finishing is not None:
                await self._finish_shielded("hangup" if self.session.ended else "stopped")
        assert active.reason is not None
        return RecordingResult(active.name, active.reason, active.key)

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
        session, app = self.session, self.session.app
        if beep:
            # Asterisk's beep=true plays on the channel it records, here the snoop, which
            # whispers nothing: measured on 22.10.1, neither the caller's phone nor the
            # recording had any sound from it. So the caller's channel plays the beep,
            # and the recording starts after it (as Twilio's playBeep).
            await session.play_and_wait("sound:beep", timeout=5.0)
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
        recordings = self._recordings()
        posted = journaled = False
        try:
            # Journaled before Asterisk records: a crash from here on cannot strand it.
            await recordings.begin(self._metadata(name, audio_format, datetime.now(UTC)), sink)
            journaled = True
            try:
                await app.ari.channels.record(
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
                raise CallEnded(session.id, f"call {session.id} has ended ({exc.message})") from exc
            except AriError as exc:
                raise RecordingError(f"Asterisk refused recording {name!r}: {exc}") from exc
            posted = True
            event = await session._await_event(started, START_TIMEOUT)
        except BaseException:
            session._cancel_waiter(started)
            session._cancel_waiter(finished)
            await self._drop_snoop(snoop_id)
            discarded = True
            if posted:  # ours is running (or starting): discard it. Never touch another's.
                try:
                    await app.ari.recordings.cancel(name)
                except AriNotFound:
                    pass
                except AriError:
                    discarded = False  # it may get stored: the journal lets a start fetch it
            if journaled and discarded:
                await recordings.abandon(name)
            raise
        if isinstance(event, RecordingFailed):
            session._cancel_waiter(finished)
            await self._drop_snoop(snoop_id)
            await recordings.abandon(name)
            raise RecordingFailedError(name, event.recording.cause)
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
            if not future.cancelled() and future.exception() is None and not session.ended:
                active.finished_mono = time.monotonic()

        finished.add_done_callback(_finished)
        if keys:
            # Not Asterisk's terminateOn: the recording is on the snoop channel, and DTMF
            # reaches the caller's channel only (audiohooks carry no DTMF). Measured on
            # 22.10.1: terminateOn=# on a snoop, '#' sent 1 s in, the recording ran to
            # its 6 s maxDurationSeconds (6.34 s); on the caller's channel it ended at
            # 1.2 s. So the caller's ChannelDtmfReceived stops it here.
            pressed = session._expect(
                ChannelDtmfReceived,
                lambda e: e.channel.id == session.id and e.digit.upper() in keys,
            )
            active.key_watch = asyncio.ensure_future(self._watch_key(active, pressed))
        self._active = active
        logger.info("call %s: recording %s (%s) started", session.id, name, target)
        return name

    async def _watch_key(self, active: _Recording, pressed: asyncio.Future[AriEvent]) -> None:
        """Stop ``active`` when the caller presses one of its finish keys."""
        try:
            event = await pressed
        except (asyncio.CancelledError, CallEnded):
            return
        finally:
            self.session._cancel_waiter(pressed)
        if self._active is not active or active.finished.done() or active.reason is not None:
            return
        assert isinstance(event, ChannelDtmfReceived)
        active.reason, active.key = "finish_on_key", event.digit
        logger.info(
            "call %s: recording %s ended by key %s", self.session.id, active.name, event.digit
        )
        try:
            await self.session.app.ari.recordings.stop(active.name)
        except AriNotFound:
            pass  # it ended meanwhile (limit, hang-up)
        except AriError as exc:
            logger.warning(
                "call %s: stopping recording %s on its key failed: %s",
                self.session.id,
                active.name,
                exc,
            )

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
            await app._retry_after_outage(functools.partial(app.ari.channels.hangup, snoop_id))
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
            return await self._finish_shielded("stopped")

    async def finalize(self) -> None:
        """At hangup: deliver a recording still running (or being stopped). Never raises."""
        try:
            async with self._lock:
                if self._active is not None or self._finishing is not None:
                    await self._finish_shielded("hangup")
        except Exception:
            logger.exception("call %s: finalizing the recording failed", self.session.id)

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
                "call %s: finishing a recording failed: %s", self.session.id, task.exception()
            )

    async def _finish(self, active: _Recording) -> str:
        session, app = self.session, self.session.app
        try:
            if not active.finished.done():
                with contextlib.suppress(AriNotFound):
                    # Asterisk down (killed): wait for it to be back, then stop again
                    # (404 then: the live recording died with it, its file is stored).
                    await app._retry_after_outage(
                        functools.partial(app.ari.recordings.stop, active.name)
                    )
            await self._wait_stored(active)
        except RecordingFailedError:
            self._forget(active)  # nothing was stored: nothing to deliver
            await self._recordings().abandon(active.name)
            raise
        finally:
            if active.key_watch is not None:
                active.key_watch.cancel()
            if active.snoop_id is not None:
                await self._drop_snoop(active.snoop_id)
        session._cancel_waiter(active.finished)
        ended_at = datetime.now(UTC)
        # Stored in Asterisk now. Whatever happens next, the recording is not deleted
        # there until a sink confirmed it; if the fetch fails after its retries, the
        # journal stays and the next start fetches it.
        try:
            meta = self._metadata(active.name, active.fmt, active.started_at, ended_at)
            meta = meta.model_copy(update={"end_reason": active.reason})
            await self._recordings().fetch_and_submit(meta, active.sink)
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

    def _metadata(
        self,
        name: str,
        fmt: AudioFormat,
        started_at: datetime,
        ended_at: datetime | None = None,
    ) -> RecordingMetadata:
        session = self.session
        return RecordingMetadata(
            name=name,
            call_id=session.id,
            format=fmt.name,
            caller=session.caller_id or None,
            called_number=session.called_number or None,
            started_at=started_at,
            ended_at=ended_at,
        )


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
    if not isinstance(keys, str) or any(k not in _DTMF_KEYS for k in keys.upper()):
        raise RecordingError(f"finish_on_key must be DTMF keys (0-9 * # A-D), got {keys!r}")
    return keys.upper()
