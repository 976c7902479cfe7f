"""A fetch from an unreachable Asterisk goes on in the background while the app runs
(issue 16: nothing stranded); it used to wait for the next start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from voxtra.ari.client import AriClient
from voxtra.errors import RecordingError
from voxtra.recording import Backoff, LocalFileSink, RecordingMetadata
from voxtra.recording.app_recordings import AppRecordings

from .test_recovery import NAME, FakeAsterisk, _meta, _recording, _stored_files
from .test_recovery import asterisk as asterisk  # the fixture

FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.02, jitter=0.0)
SLOW = Backoff(initial=0.05, multiplier=2.0, cap=0.1, jitter=0.5)


def _app_recordings(
    ari: AriClient, tmp_path: Path, slow: Backoff
) -> tuple[AppRecordings, list[RecordingMetadata], list[str]]:
    delivered: list[RecordingMetadata] = []
    failed: list[str] = []
    recordings = AppRecordings(
        ari,
        LocalFileSink(tmp_path / "out"),
        tmp_path / "spool",
        retries=1,
        backoff=FAST,
        slow_backoff=slow,
        on_delivered=delivered.append,
        on_failed=lambda m, _e: failed.append(m.name),
    )
    return recordings, delivered, failed


async def test_a_fetch_past_its_retries_is_delivered_once_while_the_app_runs(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    asterisk.resets = 5  # 2 fast attempts, then 3 slow ones fail, the 4th works
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        recordings, delivered, _ = _app_recordings(ari, tmp_path, SLOW)
        with pytest.raises(Exception, match="retried in the background"):
            await recordings.fetch_and_submit(_meta(), None)
        assert recordings.pending == 1
        assert await recordings.resume() == 0  # in flight: not fetched a second time
        meta = await recordings.wait_delivered(NAME, timeout=10)
        assert await recordings.drain(5)
        await recordings.aclose()
    assert asterisk.downloads == 6
    assert [m.name for m in delivered] == [NAME] and meta.sha256
    assert [p.read_bytes() for p in _stored_files(tmp_path / "out")] == [data]
    assert NAME not in asterisk.stored  # deleted once the sink confirmed
    assert list((tmp_path / "spool" / ".incoming").iterdir()) == []


async def test_a_fetch_waiting_for_asterisk_does_not_hold_up_shutdown(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    asterisk.stored[NAME] = _recording(tmp_path)
    asterisk.resets = 100
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        recordings, _, _ = _app_recordings(ari, tmp_path, Backoff(initial=30.0, cap=60.0))
        with pytest.raises(Exception, match="cannot fetch"):
            await recordings.fetch_and_submit(_meta(), None)
        started = time.monotonic()
        assert not await recordings.drain(20)
        await recordings.aclose(grace=20)
        assert time.monotonic() - started < 5  # generous: the next try was 15-30 s away
        assert recordings.pending == 0
        await asyncio.sleep(0)
    # Journaled: the next start fetches it.
    assert (tmp_path / "spool" / ".incoming" / f"{NAME}.meta.json").is_file()


async def test_a_fetch_running_out_of_retries_during_aclose_does_not_go_on_after_it(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Its fast retries ran out during aclose's grace: it started a background fetch that
    # went on downloading after aclose returned (aclose had cancelled those before).
    asterisk.stored[NAME] = _recording(tmp_path)
    asterisk.resets = 10**6
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        recordings = AppRecordings(
            ari,
            LocalFileSink(tmp_path / "out"),
            tmp_path / "spool",
            retries=3,
            backoff=Backoff(initial=0.05, multiplier=1.0, cap=0.05, jitter=0.0),
            slow_backoff=Backoff(initial=0.1, multiplier=1.0, cap=0.1, jitter=0.0),
        )
        finishing = asyncio.ensure_future(recordings.fetch_and_submit(_meta(), None))
        recordings.track(finishing)  # as a call's teardown is
        await recordings.aclose(grace=3.0)
        assert finishing.done() and isinstance(finishing.exception(), RecordingError)
        assert asterisk.downloads == 4 and recordings.pending == 0
        await asyncio.sleep(0.5)  # five slow retries' worth
        assert asterisk.downloads == 4
    # Journaled: the next start fetches it.
    assert (tmp_path / "spool" / ".incoming" / f"{NAME}.meta.json").is_file()
