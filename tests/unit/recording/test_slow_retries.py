"""Delivery keeps trying past its fast retries while it runs (issue 16: nothing stranded).

A storage outage longer than the fast retries used to leave the recording
``exhausted`` until the next application start; now it waits on the slow backoff,
stays spooled (on disk) meanwhile, and is delivered once the sink answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from voxtra.recording import (
    Backoff,
    CompositeDeliveryError,
    DeliveryError,
    InvalidRecordingName,
    LocalFileSink,
    RecordingDelivery,
    RecordingMetadata,
)
from voxtra.recording.app_recordings import AppRecordings
from voxtra.recording.delivery import own_failure

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


class SlowSink:
    """Stores every recording, taking ``seconds`` for each."""

    name = "slow"

    def __init__(self, directory: Path, seconds: float) -> None:
        self.inner = LocalFileSink(directory, name="slow")
        self.seconds = seconds
        self.stored = 0

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        await asyncio.sleep(self.seconds)
        location = await self.inner.deliver(path, meta)
        self.stored += 1
        return location


async def test_a_sink_that_is_down_does_not_cut_short_the_wait_for_another(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    down = FlakySink(tmp_path / "down", name="down")
    down.broken = True
    slow = SlowSink(tmp_path / "slow", seconds=0.5)
    recordings = AppRecordings(
        cast(Any, object()),
        down,
        tmp_path / "spool",
        retries=0,
        backoff=FAST,
        slow_backoff=Backoff(initial=60.0, cap=60.0, jitter=0.0),
        delete_from_asterisk=False,
    )
    await recordings.submit(make_wav("a.wav"), _meta("for-down"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while recordings.default.waiting < 1 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await recordings.submit(make_wav("b.wav"), _meta("for-slow"), sink=slow)
    started = time.monotonic()
    # False ("for-down" waits for its sink), but only once the slow upload is done: the
    # default sink being down made drain return at once, the upload cut off at close.
    assert not await recordings.drain(10)
    assert slow.stored == 1 and time.monotonic() - started >= 0.4
    assert recordings.pending == 1
    await recordings.aclose(grace=0.1)
    assert len(down.calls) == 1 and slow.stored == 1


class PickySink:
    """Stores every recording but ``bad``, which fails with ``error()`` every time."""

    name = "picky"

    def __init__(self, directory: Path, error: Callable[[], Exception]) -> None:
        self.inner = LocalFileSink(directory, name="picky")
        self.error = error
        self.bad_attempts: list[float] = []

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        if meta.name == "bad":
            self.bad_attempts.append(time.monotonic())
            raise self.error()
        return await self.inner.deliver(path, meta)


async def _submit_good_ones_while_bad_fails(
    make_wav: MakeWav, tmp_path: Path, error: Callable[[], Exception]
) -> tuple[PickySink, RecordingDelivery]:
    sink = PickySink(tmp_path / "out", error)
    delivery = RecordingDelivery(
        sink,
        tmp_path / "spool",
        retries=0,  # straight to the 30 s slow backoff: a wake shows
        backoff=Backoff(initial=0.1, multiplier=2.0, cap=0.4, jitter=0.0),
        slow_backoff=Backoff(initial=30.0, cap=30.0, jitter=0.0),
        owns_sink=False,
    )
    src = make_wav()
    await delivery.submit(src, _meta("bad"))
    for n in range(20):  # a recording delivered every 50 ms, for a second
        await asyncio.sleep(0.05)
        await delivery.submit(src, _meta(f"good-{n}"))
    assert await delivery.drain(timeout=5) is False  # only "bad" is left, waiting
    return sink, delivery


async def test_a_recording_failing_on_its_own_keeps_its_backoff(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    # The error says nothing (no status): the first success after it may be the sink
    # coming back, so it wakes "bad" once, not before the 0.1 s floor (the first fast
    # retry's delay). That failure came although the sink delivered since: it is the
    # recording's own, and "bad" sleeps out its 30 s. Every success used to wake it:
    # 20 attempts in this second, for as long as other recordings kept arriving.
    sink, delivery = await _submit_good_ones_while_bad_fails(
        make_wav, tmp_path, lambda: DeliveryError("picky", "403 AccessDenied for this key")
    )
    attempts = sink.bad_attempts
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.09
    assert delivery.waiting == 1 and delivery.delivered_count == 20
    await delivery.aclose(grace=1)
    [left] = await delivery.spooled()
    assert left.metadata.name == "bad" and left.attempts == 2


async def test_a_recording_the_store_refuses_is_not_woken_by_successes(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    sink, delivery = await _submit_good_ones_while_bad_fails(
        make_wav, tmp_path, lambda: _aiohttp_error(403)
    )
    # A 403 is about this recording: no success wakes it, not even the first.
    assert len(sink.bad_attempts) == 1
    assert delivery.waiting == 1 and delivery.delivered_count == 20
    await delivery.aclose(grace=1)


def _client_error(status: int, code: str) -> Exception:
    exceptions = pytest.importorskip("botocore.exceptions")
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    cause: Exception = exceptions.ClientError(response, "PutObject")
    error = DeliveryError("s3", f"upload failed: {cause}")
    error.__cause__ = cause
    return error


def _aiohttp_error(status: int) -> Exception:
    error = DeliveryError("gcs", f"upload failed: {status}")
    error.__cause__ = aiohttp.ClientResponseError(None, (), status=status)  # type: ignore[arg-type]
    return error


@pytest.mark.parametrize(
    ("make", "own"),
    [
        (lambda: _client_error(403, "AccessDenied"), True),
        (lambda: _client_error(400, "InvalidArgument"), True),
        (lambda: _client_error(503, "SlowDown"), False),
        (lambda: _client_error(500, "InternalError"), False),
        (lambda: _client_error(400, "RequestTimeout"), False),
        (lambda: _client_error(404, "NoSuchBucket"), False),
        (lambda: _client_error(403, "RequestTimeTooSkewed"), False),
        (lambda: _aiohttp_error(403), True),
        (lambda: _aiohttp_error(429), False),
        (lambda: _aiohttp_error(408), False),
        (lambda: _aiohttp_error(502), False),
        (lambda: InvalidRecordingName("bad name"), True),
        (lambda: DeliveryError("s3", "no status"), False),
        (lambda: ConnectionResetError("reset"), False),
        (lambda: TimeoutError(), False),
        (
            lambda: CompositeDeliveryError(
                "both", {"a": _aiohttp_error(403), "b": _aiohttp_error(503)}, {}
            ),
            False,
        ),
        (
            lambda: CompositeDeliveryError(
                "both", {"a": _aiohttp_error(403), "b": _aiohttp_error(404)}, {}
            ),
            True,
        ),
    ],
)
def test_own_failure_tells_a_recordings_problem_from_an_outage(
    make: Callable[[], Exception], own: bool
) -> None:
    assert own_failure(make()) is own


def test_backoff_does_not_overflow_after_many_slow_retries() -> None:
    backoff = Backoff(initial=30.0, multiplier=2.0, cap=60.0, jitter=0.0)
    assert backoff.delay(5000) == 60.0
