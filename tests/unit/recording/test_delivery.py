from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from voxtra.errors import ConfigError, RecordingError
from voxtra.recording import (
    Backoff,
    CompositeSink,
    LocalFileSink,
    RecordingDelivery,
    RecordingMetadata,
)

from .conftest import MakeWav
from .helpers import BlockingSink, FlakySink

FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.04, jitter=0.0)


def _meta(name: str = "rec-1") -> RecordingMetadata:
    return RecordingMetadata(name=name, call_id="call-1", caller="100", called_number="200")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _delivery_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("voxtra-recording-")]


def test_backoff_is_exponential_capped_and_jittered() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, cap=5.0, jitter=0.5)
    assert [backoff.delay(n, rand=lambda: 0.0) for n in range(5)] == [1, 2, 4, 5, 5]
    assert backoff.delay(1, rand=lambda: 1.0) == 1.0  # 2 s minus the full 50 % jitter
    delays = {backoff.delay(2) for _ in range(50)}
    assert len(delays) > 1 and all(2.0 <= d <= 4.0 for d in delays)
    with pytest.raises(ConfigError):
        Backoff(jitter=2)


async def test_delivery_spools_then_delivers_in_background(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    src = make_wav(seconds=0.3)
    delivered: list[RecordingMetadata] = []
    sink = LocalFileSink(tmp_path / "out")
    async with RecordingDelivery(
        sink, tmp_path / "spool", on_delivered=delivered.append
    ) as delivery:
        entry = await delivery.submit(src, _meta())
        # Durable in the spool before any upload, with the measured metadata.
        spooled = tmp_path / "spool" / entry.id
        assert _sha(spooled / "rec-1.wav") == _sha(src) == entry.metadata.sha256
        on_disk = json.loads((spooled / "entry.json").read_text())
        assert on_disk["metadata"]["duration"] == pytest.approx(0.3)
        assert delivery.pending == 1
        assert await delivery.drain(timeout=5)
        assert delivery.pending == 0
    assert len(delivered) == 1
    meta = delivered[0]
    assert isinstance(meta.location, str) and meta.location.startswith("file://")
    stored = Path(meta.location.removeprefix("file://"))
    assert _sha(stored) == meta.sha256 == _sha(src)
    assert not spooled.exists()
    assert src.exists()  # copied, not moved


async def test_move_removes_the_source_only_once_spooled(make_wav: MakeWav, tmp_path: Path) -> None:
    src = make_wav()
    sha = _sha(src)
    sink = FlakySink(tmp_path / "out", failures=100)
    delivery = RecordingDelivery(sink, tmp_path / "spool", retries=0)
    entry = await delivery.submit(src, _meta(), move=True)
    assert not src.exists()
    assert _sha(delivery.spool.audio_path(entry)) == sha
    await delivery.aclose()
    with pytest.raises(RecordingError, match="not a file"):
        await RecordingDelivery(sink, tmp_path / "spool2").submit(src, _meta())


async def test_retries_with_backoff_then_success(make_wav: MakeWav, tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "out", failures=3)
    delivered: list[RecordingMetadata] = []
    async with RecordingDelivery(
        sink, tmp_path / "spool", retries=5, backoff=FAST, on_delivered=delivered.append
    ) as delivery:
        await delivery.submit(make_wav(), _meta())
        assert await delivery.drain(timeout=5)
        assert await delivery.spooled() == []
    assert len(sink.calls) == 4 and sink.stored == 1
    gaps = [b - a for a, b in zip(sink.calls, sink.calls[1:], strict=False)]
    for gap, expected in zip(gaps, [0.01, 0.02, 0.04], strict=True):
        assert gap >= expected * 0.9
    assert len(delivered) == 1
    assert sink.closed  # the delivery owns its sink by default


async def test_exhausted_entry_stays_with_its_error_and_resume_delivers_it(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    src = make_wav()
    sink = FlakySink(tmp_path / "out")
    sink.broken = True
    delivered: list[RecordingMetadata] = []
    failed: list[tuple[RecordingMetadata, BaseException]] = []

    async def on_failed(meta: RecordingMetadata, error: BaseException) -> None:
        failed.append((meta, error))

    delivery = RecordingDelivery(
        sink,
        tmp_path / "spool",
        retries=2,
        backoff=FAST,
        on_delivered=delivered.append,
        on_failed=on_failed,
        owns_sink=False,
    )
    await delivery.submit(src, _meta())
    # False: past its fast retries it waits for a slow one (drain does not wait for it)
    assert not await delivery.drain(timeout=5)
    assert len(sink.calls) == 3 and delivered == []
    assert len(failed) == 1 and "injected failure #3" in str(failed[0][1])
    [entry] = await delivery.spooled()
    assert entry.exhausted and entry.attempts == 3
    assert entry.last_error == "DeliveryError: flaky: injected failure #3"
    assert _sha(delivery.spool.audio_path(entry)) == _sha(src)
    await delivery.aclose()

    # Application restart: a new delivery object finds the entry and delivers it.
    sink.broken = False
    async with RecordingDelivery(
        sink, tmp_path / "spool", backoff=FAST, on_delivered=delivered.append
    ) as again:
        assert await again.resume() == 1
        assert await again.drain(timeout=5)
        assert await again.spooled() == []
    assert len(delivered) == 1 and delivered[0].sha256 == _sha(src)


async def test_resume_does_not_double_deliver_entries_in_flight(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    sink = BlockingSink()
    delivered: list[RecordingMetadata] = []
    async with RecordingDelivery(sink, tmp_path / "spool", on_delivered=delivered.append) as d:
        await d.submit(make_wav(), _meta())
        await asyncio.wait_for(sink.started.wait(), 5)
        assert await d.resume() == 0
        assert d.pending == 1
        sink.release.set()
        assert await d.drain(timeout=5)
    assert [m.location for m in delivered] == ["blocked://rec-1"]


async def test_composite_partial_failure_is_tracked_in_the_spool(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    good = FlakySink(tmp_path / "a", name="a")
    bad = FlakySink(tmp_path / "b", name="b")
    bad.broken = True
    delivered: list[RecordingMetadata] = []
    delivery = RecordingDelivery(
        CompositeSink(good, bad),
        tmp_path / "spool",
        retries=1,
        backoff=FAST,
        on_delivered=delivered.append,
        owns_sink=False,
    )
    await delivery.submit(make_wav(), _meta())
    assert not await delivery.drain(timeout=5)  # waits for a slow retry
    [entry] = await delivery.spooled()
    assert entry.exhausted and set(entry.delivered) == {"a"}
    assert (len(good.calls), len(bad.calls)) == (1, 2)
    await delivery.aclose()

    bad.broken = False
    async with RecordingDelivery(
        CompositeSink(good, bad), tmp_path / "spool", on_delivered=delivered.append
    ) as again:
        await again.resume()
        assert await again.drain(timeout=5)
    assert (len(good.calls), len(bad.calls)) == (1, 3)  # "a" not uploaded twice
    [meta] = delivered
    assert isinstance(meta.location, list) and len(meta.location) == 2
    assert meta.location[0].endswith("rec-1.wav") and "/a/" in meta.location[0]


async def test_aclose_cancels_stuck_deliveries_and_keeps_them_spooled(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    sink = BlockingSink()
    delivery = RecordingDelivery(sink, tmp_path / "spool")
    await delivery.submit(make_wav(), _meta())
    await asyncio.wait_for(sink.started.wait(), 5)
    await delivery.aclose(grace=0.05)
    assert sink.cancelled
    assert delivery.pending == 0 and _delivery_tasks() == []
    assert len(await delivery.spooled()) == 1
    # A recording that finishes after the close is spooled for the next start, not refused.
    await delivery.submit(make_wav("other.wav"), _meta("rec-2"))
    assert delivery.pending == 0 and _delivery_tasks() == []
    assert sorted(e.metadata.name for e in await delivery.spooled()) == ["rec-1", "rec-2"]


async def test_a_corrupted_spool_file_is_never_delivered(make_wav: MakeWav, tmp_path: Path) -> None:
    sink = FlakySink(tmp_path / "out")
    failed: list[BaseException] = []
    delivery = RecordingDelivery(
        sink, tmp_path / "spool", on_failed=lambda _m, e: failed.append(e), owns_sink=False
    )
    entry = await delivery.submit(make_wav(), _meta())
    assert await delivery.drain(timeout=5)  # first delivery is fine
    src = make_wav("second.wav")
    blocked = RecordingDelivery(BlockingSink(), tmp_path / "spool")
    entry = await blocked.submit(src, _meta("rec-2"))
    await blocked.aclose(grace=0)
    audio = blocked.spool.audio_path(entry)
    audio.write_bytes(audio.read_bytes()[:-10] + b"\x01" * 10)  # bit rot while spooled
    await delivery.resume()
    assert await delivery.drain(timeout=5)
    assert sink.stored == 1
    assert len(failed) == 1 and "changed since it was spooled" in str(failed[0])
    [left] = await delivery.spooled()
    assert left.id == entry.id and left.exhausted
    await delivery.aclose()


async def test_hook_errors_do_not_lose_or_repeat_a_delivery(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    calls: list[str] = []

    def hook(meta: RecordingMetadata) -> None:
        calls.append(meta.name)
        raise RuntimeError("user bug")

    async with RecordingDelivery(
        LocalFileSink(tmp_path / "out"), tmp_path / "spool", on_delivered=hook
    ) as delivery:
        for i in range(3):
            await delivery.submit(make_wav(f"r{i}.wav"), _meta(f"rec-{i}"))
        assert await delivery.drain(timeout=5)
        assert await delivery.spooled() == []
        assert delivery.delivered_count == 3
    assert sorted(calls) == ["rec-0", "rec-1", "rec-2"]


async def test_a_confirmed_entry_left_by_a_crash_only_fires_the_hook(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    sink = FlakySink(tmp_path / "out")
    blocked = RecordingDelivery(BlockingSink(), tmp_path / "spool")
    entry = await blocked.submit(make_wav(), _meta())
    await blocked.aclose(grace=0)
    # As if the process died after the sink confirmed but before the entry was removed.
    entry.confirmed = True
    entry.metadata = entry.metadata.model_copy(update={"location": "file:///somewhere"})
    blocked.spool.save(entry)
    delivered: list[RecordingMetadata] = []
    async with RecordingDelivery(sink, tmp_path / "spool", on_delivered=delivered.append) as d:
        await d.resume()
        assert await d.drain(timeout=5)
        assert await d.spooled() == []
    assert sink.calls == []
    assert [m.location for m in delivered] == ["file:///somewhere"]
