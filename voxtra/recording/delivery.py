"""Getting recordings to their sink without ever losing one.

:class:`RecordingDelivery` first puts the file and its metadata into a spool
directory (durably), then uploads from the spool in a background task, retrying
with capped exponential backoff and jitter. Only after the sink confirmed is the
spool entry removed. When the fast retries run out the entry is marked
``exhausted`` (ERROR log, ``on_failed``) but not given up: it stays spooled and is
retried on a slow capped backoff (``slow_backoff``, up to 60 s apart) for as long as
the delivery runs, so a storage outage of minutes strands nothing. A delivery that
succeeds says the sink is back: it wakes the entries whose last failure looked like
the sink's (see :func:`own_failure`), not one failing on its own (a 403 for its key, a
header the store refuses), which keeps its backoff. Only the spool holds them (one
sleeping task each, no queue), and :meth:`RecordingDelivery.aclose` stops them at once,
spooled for :meth:`RecordingDelivery.resume` (call it at application start).

``on_delivered`` fires once per recording after the sink confirmed. The
confirmation is written to the spool before the hook runs and the entry is
removed after, so within a process the hook runs exactly once; only a crash in
the instant between hook and removal makes ``resume`` run it a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from voxtra.errors import ConfigError, RecordingError
from voxtra.recording.metadata import RecordingMetadata, measure_file
from voxtra.recording.naming import InvalidRecordingName
from voxtra.recording.sinks import (
    CompositeDeliveryError,
    CompositeSink,
    LocalFileSink,
    RecordingSink,
    close_sink,
    open_sink,
)
from voxtra.recording.spool import Spool, SpoolEntry

__all__ = [
    "SLOW_BACKOFF",
    "Backoff",
    "DeliveredHook",
    "FailedHook",
    "RecordingDelivery",
    "check_outside_spool",
    "local_file",
    "own_failure",
]

logger = logging.getLogger(__name__)

DeliveredHook = Callable[[RecordingMetadata], Awaitable[None] | None]
FailedHook = Callable[[RecordingMetadata, BaseException], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter.

    The delay after failure ``n`` (from 0) is ``min(cap, initial * multiplier**n)``,
    reduced by a random fraction of up to ``jitter`` so that many recordings
    failing together (storage outage) do not retry in lockstep.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0 or self.multiplier < 1:
            raise ConfigError("backoff needs initial >= 0, cap >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("backoff jitter must be between 0 and 1")

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        try:
            base = min(self.cap, self.initial * self.multiplier**failures)
        except OverflowError:  # slow retries count on for as long as an outage lasts
            base = self.cap
        return base * (1.0 - self.jitter * rand())


#: Retries after the fast ones ran out: 15-30 s, then 30-60 s apart, for as long as the
#: delivery runs (an outage of minutes must not leave recordings for the next start).
SLOW_BACKOFF = Backoff(initial=30.0, multiplier=2.0, cap=60.0, jitter=0.5)


#: 4xx codes S3 answers for what the whole sink shares (its clock, credentials, bucket,
#: request rate), not for one recording: a success after them does say the sink is back.
_SINK_WIDE_4XX = frozenset(
    {
        "ExpiredToken",
        "InvalidAccessKeyId",
        "NoSuchBucket",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "SignatureDoesNotMatch",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)


def own_failure(error: BaseException) -> bool:
    """Whether ``error`` is about the recording itself rather than its sink being down.

    It is when the store refused this object with an HTTP 4xx (a 403 for its key, a
    header it rejects; not 408, 429, nor an S3 code about the whole sink: an expired
    token, a skewed clock, a missing bucket, throttling) or Voxtra refused the
    recording (a bad name). Connection errors, timeouts, 5xx and errors that carry no
    status are not. The SDKs' errors are read by their attributes
    (botocore's ``response`` dict, aiohttp's ``status``), so neither is imported here.
    """
    if isinstance(error, CompositeDeliveryError):
        return all(own_failure(failure) for failure in error.failures.values())
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, InvalidRecordingName):
            return True
        status, code = _http_status(cause)
        if status is not None:
            return 400 <= status < 500 and status not in (408, 429) and code not in _SINK_WIDE_4XX
        cause = cause.__cause__
    return False


def _http_status(error: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status (and S3 error code) an SDK's error carries, if any."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):  # botocore's ClientError (S3)
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = (response.get("Error") or {}).get("Code")
        return (
            status if isinstance(status, int) else None,
            code if isinstance(code, str) else None,
        )
    status = getattr(error, "status", None)  # aiohttp's ClientResponseError (GCS)
    return (status if isinstance(status, int) else None), None


def check_outside_spool(sink: RecordingSink, spool_dir: str | Path) -> None:
    """Raise ConfigError if ``sink`` (or a sink of a CompositeSink) is a LocalFileSink
    storing into ``spool_dir`` or a directory inside it.

    The spool takes the directories in it for its own entries: recordings delivered
    there were moved into its quarantine at the next start. ``VoxtraSettings`` refuses
    such a ``recordings_dir``; this catches a sink built by hand.
    """
    spool = Path(os.path.realpath(spool_dir))
    for local in _local_sinks(sink):
        directory = Path(os.path.realpath(local.directory))
        if directory == spool or spool in directory.parents:
            raise ConfigError(
                f"recording sink {local.name!r} stores into {local.directory}, which is the "
                f"spool directory {spool_dir} or inside it (the spool holds recordings until "
                "they are delivered, and takes its subdirectories for its own): give the "
                "sink a directory beside the spool, e.g. data/recordings and data/spool"
            )


def _local_sinks(sink: RecordingSink) -> list[LocalFileSink]:
    if isinstance(sink, LocalFileSink):
        return [sink]
    if isinstance(sink, CompositeSink):
        return [local for inner in sink.sinks for local in _local_sinks(inner)]
    return []


def local_file(location: str | list[str] | None) -> Path | None:
    """The file a sink stored a recording as (the first ``file://`` location), or None."""
    if location is None:
        return None
    for uri in [location] if isinstance(location, str) else location:
        parsed = urlparse(uri)
        if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
            return Path(url2pathname(parsed.path))
    return None


class RecordingDelivery:
    """Spools recordings and delivers them to ``sink`` in the background.

    ``retries`` is the number of fast retries after the first attempt (``backoff``);
    after them ``on_failed`` runs once and the entry is retried on ``slow_backoff``
    until it is delivered or the delivery closes. By default the
    delivery owns the sink and closes it in :meth:`aclose`. Use as an async context
    manager, or call :meth:`aclose` yourself: no task outlives it.
    """

    def __init__(
        self,
        sink: RecordingSink,
        spool_dir: str | Path,
        *,
        retries: int = 5,
        backoff: Backoff | None = None,
        on_delivered: DeliveredHook | None = None,
        on_failed: FailedHook | None = None,
        max_concurrency: int = 4,
        owns_sink: bool = True,
        slow_backoff: Backoff | None = None,
    ) -> None:
        if retries < 0:
            raise ConfigError("retries must be >= 0")
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1")
        check_outside_spool(sink, spool_dir)
        self.sink = sink
        self.spool = Spool(spool_dir)
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.slow_backoff = slow_backoff or SLOW_BACKOFF
        self.on_delivered = on_delivered
        self.on_failed = on_failed
        self._owns_sink = owns_sink
        self._uploads = asyncio.Semaphore(max_concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._save_locks: dict[str, asyncio.Lock] = {}
        #: entries waiting for their next slow retry (drain does not wait for them)
        self._parked: set[str] = set()
        #: entries sleeping out a backoff -> the event that ends the sleep early (close
        #: sets them all, a success those in _wakeable)
        self._sleepers: dict[str, asyncio.Event] = {}
        #: sleeping entries a success wakes: their failure looked like the sink's
        self._wakeable: set[str] = set()
        #: deliveries confirmed so far (an entry that failed again although the sink
        #: delivered something since its previous failure fails on its own)
        self._successes = 0
        #: set (and replaced) when an entry is parked, so drain() looks again
        self._parked_changed = asyncio.Event()
        self._closed = False
        self._opened = False
        self.delivered_count = 0
        self.failed_count = 0

    # -- public API ----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Recordings being delivered or waiting for a retry in this process."""
        return len(self._active)

    async def spooled(self) -> list[SpoolEntry]:
        """Every entry still in the spool, including those whose retries ran out."""
        return await asyncio.to_thread(self.spool.entries)

    async def submit(
        self, path: str | Path, meta: RecordingMetadata, *, move: bool = False
    ) -> SpoolEntry:
        """Spool a finished recording and schedule its delivery; returns once it is durable.

        The file is copied into the spool (``move=True`` also removes the original
        after the spool entry is committed). The upload happens in the background.
        After :meth:`aclose` the recording is still spooled, and delivered by the next
        :meth:`resume`: a recording that finishes during shutdown is never refused.
        """
        entry = await asyncio.to_thread(self.spool.add, Path(path), meta, move=move)
        if self._closed:
            logger.warning(
                "recording %s arrived after the delivery closed; spooled as %s for the next start",
                meta.name,
                entry.id,
            )
            return entry
        logger.info("recording %s spooled as %s", meta.name, entry.id)
        self._start(entry)
        return entry

    async def open(self) -> None:
        """Have the sink make its client now (``open()``, if it has one), before calls.

        :meth:`resume` calls it. S3's client stalls the event loop 109-141 ms when it
        is made (botocore's JSON models), so it must not be made by the first upload
        while calls are live. Safe to call more than once.
        """
        if not self._opened:
            self._opened = True
            await open_sink(self.sink)

    async def resume(self) -> int:
        """Schedule every spooled entry not already in flight (call at application start).

        Opens the sink first (:meth:`open`). Entries whose retries ran out get a fresh
        set of retries. Returns how many were scheduled.
        """
        if self._closed:
            raise RecordingError("recording delivery is closed")
        await self.open()
        removed = await asyncio.to_thread(self.spool.discard_incomplete)
        if removed:
            logger.info("discarded %d incomplete spool entries", removed)
        count = 0
        for entry in await self.spooled():
            if entry.id in self._active:
                continue
            self._start(entry)
            count += 1
        if count:
            logger.info("resuming delivery of %d spooled recording(s)", count)
        return count

    @property
    def waiting(self) -> int:
        """Recordings past their fast retries, waiting for the next slow one."""
        return len(self._parked)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` passed first.

        Also False as soon as everything left waits for a slow retry (its fast retries
        failed: the sink is down): those are not waited for, they stay spooled.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._active:
            busy = [task for key, task in self._active.items() if key not in self._parked]
            if not busy:
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            parked = asyncio.ensure_future(self._parked_changed.wait())
            try:
                await asyncio.wait(
                    [*busy, parked], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                parked.cancel()
        return True

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop: let deliveries in flight finish for up to ``grace`` s, cancel the rest.

        Cancelled deliveries stay in the spool for the next :meth:`resume`; those
        waiting for a retry stop at once (spooled too) instead of sleeping out the grace.
        """
        self._closed = True
        for sleeper in self._sleepers.values():
            sleeper.set()
        tasks = list(self._active.values())
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=grace)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
        if self._owns_sink:
            await close_sink(self.sink)

    async def __aenter__(self) -> RecordingDelivery:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------
    def _start(self, entry: SpoolEntry) -> None:
        task = asyncio.create_task(self._run(entry), name=f"voxtra-recording-{entry.id}")
        self._active[entry.id] = task

        def _done(finished: asyncio.Task[None]) -> None:
            if self._active.get(entry.id) is finished:
                del self._active[entry.id]
                self._save_locks.pop(entry.id, None)
                self._parked.discard(entry.id)

        task.add_done_callback(_done)

    async def _run(self, entry: SpoolEntry) -> None:
        try:
            await self._deliver_entry(entry)
        except asyncio.CancelledError:
            logger.info("delivery of %s interrupted; it stays spooled", entry.id)
            raise
        except Exception:  # a bug, not a storage failure: keep the entry, say so
            logger.exception("delivery of %s crashed; it stays spooled", entry.id)

    async def _save(self, entry: SpoolEntry) -> None:
        lock = self._save_locks.setdefault(entry.id, asyncio.Lock())
        async with lock:
            entry.updated_at = datetime.now(UTC)
            text = entry.model_dump_json(indent=2)
            await asyncio.to_thread(self.spool.write_entry, entry.id, text)

    async def _deliver_entry(self, entry: SpoolEntry) -> None:
        audio = self.spool.audio_path(entry)
        if not entry.confirmed:
            problem = await self._check_spooled_file(entry, audio)
            if problem is not None:
                await self._give_up(entry, problem)
                return
            failures = 0
            slow = False  # past the fast retries
            successes_seen = self._successes
            if entry.exhausted:
                entry.exhausted = False
                await self._save(entry)
            while True:
                try:
                    async with self._uploads:
                        location = await self._deliver_once(entry, audio)
                    break
                except Exception as exc:
                    entry.attempts += 1
                    entry.last_error = f"{type(exc).__name__}: {exc}"
                    if not slow and failures >= self.retries:
                        slow = True
                        failures = 0
                        await self._fast_retries_ran_out(entry, exc)
                    else:
                        await self._save(entry)
                    backoff = self.slow_backoff if slow else self.backoff
                    delay = backoff.delay(failures)
                    failures += 1
                    # The next success wakes this entry only if the failure may have been
                    # the sink's: not one about this recording (own_failure), and not one
                    # that came although the sink delivered something since this entry's
                    # previous failure (the sink works; the problem is this recording's).
                    # Else one failing recording was retried by every other's success.
                    wakeable = self._successes == successes_seen and not own_failure(exc)
                    successes_seen = self._successes
                    # Slow retries fail quietly (DEBUG): the ERROR above said it once.
                    logger.log(
                        logging.DEBUG if slow else logging.WARNING,
                        "delivery of %s to %s failed (attempt %d), retrying in %.2f s: %s",
                        entry.metadata.name,
                        self.sink.name,
                        entry.attempts,
                        delay,
                        exc,
                    )
                    if not await self._sleep(entry, delay, parked=slow, wakeable=wakeable):
                        logger.info(
                            "delivery of %s stopped by shutdown after %d attempt(s); it "
                            "stays spooled for the next start",
                            entry.metadata.name,
                            entry.attempts,
                        )
                        return
            # local_path was where the file was fetched to: moved into the spool, and the
            # spool entry goes once the hook ran. Point it at the sink's copy, if local.
            entry.metadata = entry.metadata.model_copy(
                update={"location": location, "local_path": local_file(location)}
            )
            entry.confirmed = True
            entry.exhausted = False
            entry.last_error = None
            await self._save(entry)
            self._successes += 1
            self._wake_waiting()  # the sink works (again): entries waiting may try now
            if slow:
                logger.info(
                    "recording %s delivered to %s after %d attempt(s) (the sink is back)",
                    entry.metadata.name,
                    location,
                    entry.attempts + 1,
                )
            else:
                logger.info("recording %s delivered to %s", entry.metadata.name, location)
        self.delivered_count += 1
        await self._call_hook(self.on_delivered, entry.metadata)
        await asyncio.to_thread(self.spool.remove, entry)

    async def _sleep(
        self, entry: SpoolEntry, delay: float, *, parked: bool, wakeable: bool
    ) -> bool:
        """Back off ``delay`` s; False when closed (close ends the sleep at once).

        With ``wakeable`` a success of another entry ends it early, but never sooner
        than ``backoff.initial`` s after the failure: a wake retries no more often than
        the first fast retry would, however often recordings succeed.
        """
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        floor = loop.time() + min(delay, self.backoff.initial)
        if parked:
            self._parked.add(entry.id)
            self._parked_changed.set()
            self._parked_changed = asyncio.Event()
        try:
            woken = self._sleeper(entry.id, wakeable)
            await _wait(woken, delay)
            rest = floor - loop.time()
            if woken.is_set() and not self._closed and rest > 0:
                await _wait(self._sleeper(entry.id, False), rest)  # only close ends it now
        finally:
            self._sleepers.pop(entry.id, None)
            self._wakeable.discard(entry.id)
            self._parked.discard(entry.id)
        return not self._closed

    def _sleeper(self, entry_id: str, wakeable: bool) -> asyncio.Event:
        event = asyncio.Event()
        self._sleepers[entry_id] = event
        if wakeable:
            self._wakeable.add(entry_id)
        else:
            self._wakeable.discard(entry_id)
        return event

    def _wake_waiting(self) -> None:
        """Wake the entries whose failure looked like the sink's; the others keep their
        backoff."""
        for entry_id in self._wakeable:
            self._sleepers[entry_id].set()
        self._wakeable.clear()

    async def _fast_retries_ran_out(self, entry: SpoolEntry, error: BaseException) -> None:
        """ERROR and ``on_failed`` once; the entry stays and goes on to slow retries."""
        entry.exhausted = True
        await self._save(entry)
        self.failed_count += 1
        logger.error(
            "recording %s not delivered to %s after %d attempt(s); kept in %s and retried "
            "every %.0f s at most while the app runs: %s",
            entry.metadata.name,
            self.sink.name,
            entry.attempts,
            self.spool.entry_dir(entry.id),
            self.slow_backoff.cap,
            error,
        )
        await self._call_failed(entry.metadata, error)

    async def _check_spooled_file(self, entry: SpoolEntry, audio: Path) -> RecordingError | None:
        """A spooled file that no longer matches its SHA-256 would be delivered corrupt."""
        try:
            facts = await asyncio.to_thread(measure_file, audio, entry.metadata.format)
        except RecordingError as exc:
            return exc
        if facts.sha256 != entry.metadata.sha256 or facts.size_bytes != entry.metadata.size_bytes:
            return RecordingError(
                f"spooled file {audio} changed since it was spooled "
                f"(sha256 {facts.sha256} != {entry.metadata.sha256}); not delivering it"
            )
        return None

    async def _deliver_once(self, entry: SpoolEntry, audio: Path) -> str | list[str]:
        if isinstance(self.sink, CompositeSink):

            async def persist(_sink: str, _location: str) -> None:
                await self._save(entry)

            return await self.sink.deliver_tracked(
                audio, entry.metadata, entry.delivered, on_sink_done=persist
            )
        return await self.sink.deliver(audio, entry.metadata)

    async def _give_up(self, entry: SpoolEntry, error: BaseException) -> None:
        entry.exhausted = True
        entry.last_error = f"{type(error).__name__}: {error}"
        await self._save(entry)
        self.failed_count += 1
        logger.error(
            "recording %s not delivered to %s after %d attempt(s); kept in %s: %s",
            entry.metadata.name,
            self.sink.name,
            entry.attempts,
            self.spool.entry_dir(entry.id),
            error,
        )
        await self._call_failed(entry.metadata, error)

    async def _call_failed(self, meta: RecordingMetadata, error: BaseException) -> None:
        if self.on_failed is not None:
            try:
                result = self.on_failed(meta, error)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_failed hook raised for %s", meta.name)

    async def _call_hook(self, hook: DeliveredHook | None, meta: RecordingMetadata) -> None:
        if hook is None:
            return
        try:
            result = hook(meta)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_delivered hook raised for %s", meta.name)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` s."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
