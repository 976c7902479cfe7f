"""The app's recordings: fetched from Asterisk, spooled durably, delivered to sinks.

:class:`AppRecordings` takes what a call's recorder
(:class:`~voxtra.calls.recorder.CallRecorder`, behind ``CallSession.record``) had
Asterisk record. What is recorded: always a snoop channel on the caller
(``spy=both``), i.e. what the caller says and hears, mixed: the whole conversation,
whether or not the call is in a bridge.

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
import hashlib
import inspect
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from voxtra.ari.errors import (
    AriConnectionError,
    AriError,
    AriNotFound,
    AriServerError,
)
from voxtra.errors import ConfigError, RecordingError
from voxtra.recording.delivery import (
    SLOW_BACKOFF,
    Backoff,
    DeliveredHook,
    FailedHook,
    RecordingDelivery,
    check_outside_spool,
)
from voxtra.recording.metadata import RecordingMetadata, finalize_wav_header
from voxtra.recording.naming import (
    SUPPORTED_FORMATS,
    sanitize_component,
    validate_format,
)
from voxtra.recording.sinks import RecordingSink, fsync_dir, mkdir_durable
from voxtra.recording.spool import Spool, SpoolEntry, write_text_durably

if TYPE_CHECKING:
    from voxtra.ari.client import AriClient

__all__ = [
    "AppRecordings",
    "AsteriskRecordingFailed",
    "RecordingEndReason",
    "RecordingNotStarted",
    "RecordingResult",
]

logger = logging.getLogger(__name__)

Transcriber = Callable[[Path], Awaitable[str]]
"""``await transcribe(path)``: the text of a fetched recording."""

#: Where recordings fetched from Asterisk wait to be spooled (inside the spool, so the
#: spool takes them over with a hard link instead of a copy).
INCOMING_DIR = ".incoming"
#: Per-call sinks spool under ``<spool>/.sinks/<sink_dir_name(sink name)>`` (the default
#: sink's entries sit in the spool directory itself; hidden names are skipped by its
#: listing).
SINKS_DIR = ".sinks"
#: ``<spool>/.delivered/<name>``: delivered, but Asterisk's copy could not be deleted yet.
DELIVERED_DIR = ".delivered"
_JOURNAL_SUFFIX = ".meta.json"


RecordingEndReason = Literal["finish_on_key", "max_length", "silence_timeout", "stopped", "hangup"]
"""What ended a recording (``RecordingMetadata.end_reason``, ``RecordingResult.reason``)."""


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What :meth:`CallRecorder.record` (``CallSession.record()``) returns."""

    name: str
    reason: RecordingEndReason
    key: str | None = None
    """The key that ended it, for ``finish_on_key``."""
    transcript: str | None = None
    """Its text with ``transcribe=True`` ("" when nothing was recognised; None when not
    asked for, or when the transcription failed: the recording is delivered anyway)."""


class AsteriskRecordingFailed(RecordingError):
    """Asterisk reported RecordingFailed; ``cause`` is its reason (may be empty)."""

    def __init__(self, name: str, cause: str | None) -> None:
        super().__init__(self._describe(name, cause))
        self.name = name
        self.cause = cause

    @staticmethod
    def _describe(name: str, cause: str | None) -> str:
        return f"recording {name!r} failed in Asterisk: {cause or 'no cause given'}"


class RecordingNotStarted(AsteriskRecordingFailed):
    """Asterisk did not start the recording in time: the beep before it, its snoop
    channel or RecordingStarted did not come (``cause`` says which and what to check).
    It was cancelled; nothing of it is delivered, and starting again is safe."""

    @staticmethod
    def _describe(name: str, cause: str | None) -> str:
        return f"recording {name!r} did not start: {cause or 'no cause given'}"


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


def sink_dir_name(sink_name: str) -> str:
    """The directory under ``<spool>/.sinks`` of the per-call sink named ``sink_name``;
    distinct names get distinct directories.

    Earlier versions used ``sanitize_component(name)``, which gave "archive eu" and
    "archive:eu" the same directory: one sink delivered the other's recordings. A name
    that is already a safe component (sanitize_component leaves it as it is, as it
    does most names: "archive", "s3-eu") keeps that directory, so an upgrade resumes
    what it spooled without moving anything. Any other name gets ``_<squashed
    name>.<12 hex digits of its SHA-256>``: no safe name starts with "_" (sanitizing
    strips it), so the two kinds never meet, and the hash keeps distinct names apart.
    Recordings an earlier version spooled for such a name stay in the squashed
    directory, which may as well be another name's: AppRecordings.add_sink says so.
    """
    safe = sanitize_component(sink_name, fallback="sink")
    if safe == sink_name:
        return safe
    digest = hashlib.sha256(sink_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"_{sanitize_component(sink_name, fallback='sink', limit=48)}.{digest}"


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
        #: aclose() began: no fetch goes on in the background from then on
        self._closing = False
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
        # The whole spool: a per-call sink's recordings in <spool>/archive would sit among
        # the default sink's entries (RecordingDelivery checks only its own directory).
        check_outside_spool(sink, self.spool_dir)
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
        return self.spool_dir / SINKS_DIR / sink_dir_name(sink_name)

    def check_sink(self, sink: RecordingSink | None) -> None:
        """Raise ConfigError now if ``sink`` could not be used (bad object, name clash)."""
        if sink is not None and not isinstance(sink, RecordingSink):
            raise ConfigError(f"{sink!r} is not a recording sink (needs name and deliver())")
        if self._lookup(sink) is None and sink is not None:
            check_outside_spool(sink, self.spool_dir)  # add_sink would refuse it at the end

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
        await asyncio.to_thread(self._point_at_old_spool, sink.name)
        return delivery

    def _point_at_old_spool(self, sink_name: str) -> None:
        """Say where an earlier version may have spooled this sink's recordings, when
        they cannot be told from another sink's (see :func:`sink_dir_name`)."""
        squashed = sanitize_component(sink_name, fallback="sink")
        if squashed == sink_dir_name(sink_name):
            return  # its own directory, resumed
        old = self.spool_dir / SINKS_DIR / squashed
        waiting = len(Spool(old).entries()) if old.is_dir() else 0
        if waiting:
            logger.warning(
                "%d recording(s) in %s may be for sink %r: an earlier version spooled "
                "there for every sink name that squashes to %r. A sink named %r delivers "
                "them; if they are for %r, move them into %s while the app is stopped",
                waiting,
                old,
                sink_name,
                squashed,
                squashed,
                sink_name,
                self._sink_dir(sink_name),
            )

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
        """Recordings waiting for sinks not in use, by sink name (the directory name
        where no journal tells the name)."""
        found: dict[str, int] = {}
        names: dict[str, str] = {}  # directory -> sink name
        for _name, journal in self._read_journals():
            if journal.sink is not None and journal.sink not in self._deliveries:
                key = sink_dir_name(journal.sink)
                names[key] = journal.sink
                found[key] = found.get(key, 0) + 1
        root = self.spool_dir / SINKS_DIR
        known = {sink_dir_name(name) for name in self._deliveries}
        if root.is_dir():
            for child in root.iterdir():
                if child.is_dir() and child.name not in known:
                    entries = len(Spool(child).entries())
                    if entries:
                        found[child.name] = found.get(child.name, 0) + entries
        return {names.get(key, key): count for key, count in found.items()}

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
        """Journal a recording about to be started in Asterisk (durable before it starts).

        Raises RecordingError for a name another recording of this app holds (being
        recorded or fetched, or journaled by an earlier run): Asterisk refuses that name
        too (409), and the refused start's cleanup (:meth:`abandon`) then removed the
        other recording's journal, measured with two calls given the same name: a crash
        would have stranded the first one.
        """
        name = meta.name
        if name in self._in_flight:
            raise _name_in_use(name, "is being recorded or fetched")
        self._in_flight.add(name)
        try:
            await asyncio.to_thread(
                self._write_new_journal, _Journal(metadata=meta, sink=_sink_key(sink))
            )
        except OSError as exc:
            self._in_flight.discard(meta.name)
            # Refused before Asterisk records: a recording nobody could recover is
            # worse than none (nothing was recorded).
            raise RecordingError(
                f"cannot journal recording {meta.name!r} in {self.incoming_dir}, so it was "
                f"not started: {exc} (check that the spool directory is writable and has "
                "free space)"
            ) from exc
        except BaseException:
            self._in_flight.discard(meta.name)
            raise

    async def abandon(self, name: str) -> None:
        """Forget a journaled recording Asterisk never stored (failed or cancelled)."""
        self._in_flight.discard(name)
        try:
            await asyncio.to_thread(self._drop_incoming, name)
        except OSError as exc:
            # Called while another error is raised: it must not take that one's place.
            # A journal left here is dropped at the next start (Asterisk has no file).
            logger.warning(
                "recording %s: cannot remove its journal from %s: %s", name, self.incoming_dir, exc
            )

    def track(self, task: asyncio.Future[Any]) -> None:
        """Have :meth:`drain` and :meth:`aclose` wait for ``task`` (a finishing recording)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fetch_and_submit(
        self,
        meta: RecordingMetadata,
        sink: RecordingSink | None,
        *,
        transcribe: Transcriber | None = None,
    ) -> SpoolEntry:
        """Fetch stored recording ``meta.name`` from Asterisk and spool it for ``sink``.

        Transport failures (reset, stall, Asterisk 5xx, local I/O) are retried with the
        delivery's backoff. If it still fails (RecordingError), the journal stays and,
        for an unreachable Asterisk or a spool that cannot take the file (disk full,
        read-only), the fetch goes on in the background on the slow backoff while the
        app runs (and at the next start); Asterisk keeps its copy until a sink confirmed.

        ``transcribe(path)``: the file's text, put in the metadata before it is spooled
        (so sinks and ``on_recording_delivered`` see it); a transcription that fails is
        logged and the recording delivered without it.
        """
        return await self._fetch_and_submit(
            meta, sink, self.retries, later=True, transcribe=transcribe
        )

    async def _fetch_and_submit(
        self,
        meta: RecordingMetadata,
        sink: RecordingSink | None,
        retries: int,
        *,
        later: bool,
        transcribe: Transcriber | None = None,
    ) -> SpoolEntry:
        name = meta.name
        self._in_flight.add(name)
        try:
            try:
                entry = await self._fetch_into_spool(meta, sink, retries, transcribe)
            except AriError as exc:
                transient = isinstance(exc, AriConnectionError | AriServerError)
                # Not once aclose() began: a background fetch started then outlived it.
                # The journal stays, and brings the recording back at the next start.
                if later and transient and not self._closing:
                    self._fetch_later(meta, sink, exc)
                    raise RecordingError(
                        f"cannot fetch recording {name!r} from Asterisk yet (it stays "
                        f"there; retried in the background): {exc}"
                    ) from exc
                raise RecordingError(
                    f"cannot fetch recording {name!r} from Asterisk (it stays there): {exc}"
                ) from exc
            except OSError as exc:
                # Our disk (full, read-only, gone) or, as TimeoutError, a download no
                # transport error covered: both may pass, so retried as an unreachable
                # Asterisk is. Asterisk keeps its copy meanwhile; the journal (written
                # when it started) brings it back at the next start.
                if isinstance(exc, TimeoutError):
                    problem = "from Asterisk (it did not answer in time)"
                else:
                    problem = (
                        f"into the spool {self.spool_dir} (check that it is writable and "
                        "has free space)"
                    )
                if later and not self._closing:  # see above
                    self._fetch_later(meta, sink, exc)
                    raise RecordingError(
                        f"cannot fetch recording {name!r} {problem} yet (it stays in "
                        f"Asterisk; retried in the background): {exc}"
                    ) from exc
                raise RecordingError(
                    f"cannot fetch recording {name!r} {problem} (it stays in Asterisk): {exc}"
                ) from exc
            try:
                await asyncio.to_thread(self._drop_incoming, name)
            except OSError as exc:
                # Spooled: the next start sees that and drops the journal then.
                logger.warning(
                    "recording %s is spooled, but its journal in %s could not be removed: %s",
                    name,
                    self.incoming_dir,
                    exc,
                )
            return entry
        finally:
            if name not in self._slow_fetches:  # it goes on in the background
                self._in_flight.discard(name)

    async def _fetch_into_spool(
        self,
        meta: RecordingMetadata,
        sink: RecordingSink | None,
        retries: int,
        transcribe: Transcriber | None,
    ) -> SpoolEntry:
        """Journal, download, transcribe and spool ``meta`` (AriError, OSError pass)."""
        name = meta.name
        await asyncio.to_thread(self._write_journal, _Journal(metadata=meta, sink=_sink_key(sink)))
        path = self._incoming_audio(name, meta.format)
        await self._download(name, path, retries)
        await self._finish_header(name, meta.format, path)
        meta = meta.model_copy(update={"local_path": path})
        if transcribe is not None:
            try:
                meta = meta.model_copy(update={"transcript": await transcribe(path)})
            except Exception:
                logger.exception("recording %s: transcription failed; delivered without", name)
        return await self.submit(path, meta, sink=sink, move=True)

    def _fetch_later(
        self, meta: RecordingMetadata, sink: RecordingSink | None, error: BaseException
    ) -> None:
        """Keep fetching ``meta`` on the slow backoff (ERROR once now, INFO when done)."""
        backoff = self.slow_backoff or SLOW_BACKOFF
        logger.error(
            "recording %s could not be fetched from Asterisk into the spool after %d "
            "attempt(s); it stays there, journaled, and is fetched again every %.0f s at "
            "most while the app runs: %s",
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
                if isinstance(cause, AriConnectionError | AriServerError | OSError):
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

    def _write_new_journal(self, journal: _Journal) -> None:
        """:meth:`_write_journal`, refusing a name an earlier run's journal holds (its
        recording waits for its sink, or for the fetch at the next start)."""
        name = journal.metadata.name
        if self._journal_path(name).exists():
            raise _name_in_use(name, f"is journaled in {self.incoming_dir}, not yet spooled")
        self._write_journal(journal)

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
        """Wait until nothing is fetched or delivered; False if ``timeout`` passed first.

        Every sink's uploads in flight are waited for, up to ``timeout``; recordings
        waiting for a slow retry (their sink, or Asterisk, is down) are not: then the
        answer is False once everything else is done. A sink that is down does not cut
        short the wait for another's uploads.
        """
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
            deliveries = [delivery for _, delivery in list(self._deliveries.values())]
            # Each delivery's drain ends when it has nothing in flight (False when what it
            # has left waits for a slow retry): one with only a sink that is down answers
            # at once, so every one is asked, and none stops the others being waited for.
            await asyncio.gather(*(delivery.drain(left()) for delivery in deliveries))
            if left() == 0:
                return self.pending == 0
            # A fetch may have finished into a delivery meanwhile: check both again.
            if any(not task.done() for task in self._tasks):
                continue
            if self.pending == 0:
                return True
            if all(d.pending == d.waiting for _, d in self._deliveries.values()):
                return False  # what is left waits for a sink or Asterisk to answer again

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
        # First of all: a fetch whose fast retries run out during the grace below must
        # not go on in the background (one did, downloading after aclose returned).
        self._closing = True
        # Waiting for Asterisk: their journals bring them back at the next start.
        await _cancel(list(self._slow_fetches.values()))
        # Tasks tracked during the grace (a recovery fetch of a sink first used by a
        # finishing recording) are waited for too, within the same grace.
        while tasks := [task for task in self._tasks if not task.done()]:
            _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            if unfinished:
                await _cancel(list(unfinished))
                logger.info(
                    "%d recording fetch(es) interrupted by shutdown; fetched at the next start",
                    len(unfinished),
                )
                break
        self._closed = True
        # Nothing outlives this: whatever was still started meanwhile is stopped now.
        await _cancel([*self._tasks, *self._slow_fetches.values()])
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


async def _cancel(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have stopped."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)


def _name_in_use(name: str, where: str) -> RecordingError:
    return RecordingError(
        f"recording name {name!r} is in use: another recording of this app with that name "
        f"{where}; give each recording a unique name (or none: one is generated)"
    )


def _sink_key(sink: RecordingSink | None) -> str | None:
    return None if sink is None else sink.name


def _write_durably(path: Path, text: str) -> None:
    write_text_durably(path, text)
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
