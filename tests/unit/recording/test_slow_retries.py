"""Delivery keeps trying past its fast retries while it runs (issue 16: nothing stranded).

A storage outage longer than the fast retries used to leave the recording
``exhausted`` until the next application start; now it waits on the slow backoff,
stays spooled (on disk) meanwhile, and is delivered once the sink answers again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from voxtra.recording import Backoff, RecordingDelivery, RecordingMetadata

from .conftest import MakeWav
from .helpers import FlakySink

FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.02, jitter=0.0)
SLOW = Backoff(initial=0.05, multiplier=2.0, cap=0.1, jitter=0.5)


def _meta(name: str) -> RecordingMetadata:
    return RecordingMetadata(name=name, call_id="call-1")


async def test_an_outage_longer_than_the_retries_is_delivered_exactly_once_without_restart(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    sink = FlakySink(tmp_path / "out", failures=8)  # 8 > 1 + retries
    delivered: list[RecordingMetadata] = []
    failed: list[BaseException] = []
    delivery = RecordingDelivery(
        sink,
        tmp_path / "spool",
        retries=2,
        backoff=FAST,
        slow_backoff=SLOW,
        on_delivered=delivered.append,
        on_failed=lambda _m, e: failed.append(e),
    )
    async with delivery:
        await delivery.submit(make_wav(), _meta("rec-1"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not delivered and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert [m.name for m in delivered] == ["rec-1"]
        assert await delivery.drain(timeout=5)
        assert len(sink.calls) == 9 and sink.stored == 1
        # on_failed once, when the fast retries ran out (attempt 3), not per slow retry
        assert len(failed) == 1 and "injected failure #3" in str(failed[0])
        assert await delivery.spooled() == []
        await asyncio.sleep(0.3)  # nothing delivers it a second time
    assert len(delivered) == 1 and sink.stored == 1


async def test_waiting_entries_stay_spooled_and_do_not_hold_up_drain_or_close(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    sink = FlakySink(tmp_path / "out")
    sink.broken = True
    failed: list[str] = []
    delivery = RecordingDelivery(
        sink,
        tmp_path / "spool",
        retries=0,
        backoff=FAST,
        slow_backoff=Backoff(initial=30.0, cap=60.0),
        on_failed=lambda m, _e: failed.append(m.name),
        owns_sink=False,
    )
    for n in range(3):
        await delivery.submit(make_wav(f"r{n}.wav"), _meta(f"rec-{n}"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while delivery.waiting < 3 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert delivery.waiting == 3 and sorted(failed) == ["rec-0", "rec-1", "rec-2"]
    entries = await delivery.spooled()
    assert len(entries) == 3 and all(e.exhausted and e.attempts == 1 for e in entries)
    # Waiting for a slow retry is not "in flight": drain says False without waiting.
    started = time.monotonic()
    assert not await delivery.drain(timeout=20)
    await delivery.aclose(grace=20)
    assert time.monotonic() - started < 5  # generous: the retries were 15-60 s away
    assert delivery.pending == 0 and len(sink.calls) == 3
    assert len(await delivery.spooled()) == 3

    # Storage back, next start: each delivered once.
    sink.broken = False
    delivered: list[str] = []
    async with RecordingDelivery(
        sink, tmp_path / "spool", backoff=FAST, on_delivered=lambda m: delivered.append(m.name)
    ) as again:
        assert await again.resume() == 3
        assert await again.drain(timeout=5)
    assert sorted(delivered) == ["rec-0", "rec-1", "rec-2"] and sink.stored == 3


async def test_one_success_wakes_the_waiting_entries(make_wav: MakeWav, tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "out")
    sink.broken = True
    delivered: list[str] = []
    delivery = RecordingDelivery(
        sink,
        tmp_path / "spool",
        retries=0,
        backoff=FAST,
        slow_backoff=Backoff(initial=60.0, cap=60.0, jitter=0.0),
        on_delivered=lambda m: delivered.append(m.name),
        owns_sink=False,
    )
    async with delivery:
        for n in range(3):
            await delivery.submit(make_wav(f"r{n}.wav"), _meta(f"rec-{n}"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while delivery.waiting < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert delivery.waiting == 3
        sink.broken = False
        await delivery.submit(make_wav("r3.wav"), _meta("rec-3"))  # storage is back
        assert await delivery.drain(timeout=10)  # not 60 s: the success woke the others
    assert sorted(delivered) == ["rec-0", "rec-1", "rec-2", "rec-3"] and sink.stored == 4


def test_backoff_does_not_overflow_after_many_slow_retries() -> None:
    backoff = Backoff(initial=30.0, multiplier=2.0, cap=60.0, jitter=0.0)
    assert backoff.delay(5000) == 60.0
