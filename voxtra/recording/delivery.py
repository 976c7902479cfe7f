"""Getting recordings to their sink without ever losing one.

:class:`RecordingDelivery` first puts the file and its metadata into a spool
directory (durably), then uploads from the spool in a background task, retrying
with capped exponential backoff and jitter. Only after the sink confirmed is the
spool entry removed. When retries run out the entry stays, with its last error,
and :meth:`RecordingDelivery.resume` (call it at application start) tries again.

``on_delivered`` fires once per recording after the sink confirmed. The
confirmation is written to the spool before the hook runs and the entry is
removed after, so within a process the hook runs exactly once; only a crash in
the instant between hook and removal makes ``resume`` run it a second time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from voxtra.errors import ConfigError, RecordingError
from voxtra.recording.metadata import RecordingMetadata, measure_file
from voxtra.recording.sinks import CompositeSink, RecordingSink, close_sink
from voxtra.recording.spool import Spool, SpoolEntry

__all__ = ["Backoff", "DeliveredHook", "FailedHook", "RecordingDelivery"]

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
        base = min(self.cap, self.initial * self.multiplier**failures)
        return base * (1.0 - self.jitter * rand())


class RecordingDelivery:
    """Spools recordings and delivers them to ``sink`` in the background.

    ``retries`` is the number of retries after the first attempt. By default the
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
    ) -> None:
        if retries < 0:
            raise ConfigError("retries must be >= 0")
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1")
        self.sink = sink
        self.spool = Spool(spool_dir)
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.on_delivered = on_delivered
        self.on_failed = on_failed
        self._owns_sink = owns_sink
        self._uploads = asyncio.Semaphore(max_concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._save_locks: dict[str, asyncio.Lock] = {}
        self._closed = False
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

    async def resume(self) -> int:
        """Schedule every spooled entry not already in flight (call at application start).

        Entries whose retries ran out get a fresh set of retries. Returns how many
        were scheduled.
        """
        if self._closed:
            raise RecordingError("recording delivery is closed")
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

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._active:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(list(self._active.values()), timeout=remaining)
        return True

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop: let deliveries in flight finish for up to ``grace`` s, cancel the rest.

        Cancelled deliveries stay in the spool for the next :meth:`resume`.
        """
        self._closed = True
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
                    if failures >= self.retries:
                        await self._give_up(entry, exc)
                        return
                    await self._save(entry)
                    delay = self.backoff.delay(failures)
                    failures += 1
                    logger.warning(
                        "delivery of %s to %s failed (attempt %d), retrying in %.2f s: %s",
                        entry.metadata.name,
                        self.sink.name,
                        entry.attempts,
                        delay,
                        exc,
                    )
                    await asyncio.sleep(delay)
            entry.metadata = entry.metadata.model_copy(update={"location": location})
            entry.confirmed = True
            entry.last_error = None
            await self._save(entry)
            logger.info("recording %s delivered to %s", entry.metadata.name, location)
        self.delivered_count += 1
        await self._call_hook(self.on_delivered, entry.metadata)
        await asyncio.to_thread(self.spool.remove, entry)

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
        if self.on_failed is not None:
            try:
                result = self.on_failed(entry.metadata, error)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_failed hook raised for %s", entry.metadata.name)

    async def _call_hook(self, hook: DeliveredHook | None, meta: RecordingMetadata) -> None:
        if hook is None:
            return
        try:
            result = hook(meta)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_delivered hook raised for %s", meta.name)
