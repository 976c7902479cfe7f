"""Each per-call sink spools in a directory of its own: two names that differ only in
characters a path cannot hold ("archive eu", "archive:eu") shared ``.sinks/archive_eu``,
and one sink delivered the other's recordings."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, cast

import pytest

from voxtra.recording import Backoff, RecordingMetadata
from voxtra.recording.app_recordings import SINKS_DIR, AppRecordings, sink_dir_name
from voxtra.recording.naming import sanitize_component
from voxtra.recording.spool import Spool

from .conftest import MakeWav
from .helpers import FlakySink

FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.02, jitter=0.0)


def _meta(name: str) -> RecordingMetadata:
    return RecordingMetadata(name=name, call_id="call-1")


def _recordings(tmp_path: Path) -> AppRecordings:
    return AppRecordings(
        cast(Any, object()),
        FlakySink(tmp_path / "default", name="default"),
        tmp_path / "spool",
        backoff=FAST,
        slow_backoff=Backoff(initial=30.0, cap=30.0),
        delete_from_asterisk=False,
    )


@pytest.mark.parametrize("name", ["archive", "s3-eu", "gcs.backup_2", "local"])
def test_a_safe_name_keeps_the_directory_earlier_versions_gave_it(name: str) -> None:
    assert sink_dir_name(name) == name == sanitize_component(name, fallback="sink")


def test_names_that_squash_alike_get_distinct_directories() -> None:
    names = ["archive eu", "archive:eu", "archive/eu", "archive_eu", "archive  eu", "", "sink"]
    dirs = [sink_dir_name(n) for n in names]
    assert len(set(dirs)) == len(names)
    assert sink_dir_name("archive eu") == sink_dir_name("archive eu")  # stable across runs
    for name, directory in zip(names, dirs, strict=True):
        if directory != name:  # hashed: never a name some safe sink name keeps
            assert directory.startswith("_") and len(directory) <= 62
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", directory) and ".." not in directory
    long = "x" * 200
    assert sink_dir_name(long) != sink_dir_name(long + "y")  # cut at the same length


async def test_two_sinks_whose_names_squash_alike_keep_their_recordings_apart(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    down = FlakySink(tmp_path / "eu", name="archive eu")
    down.broken = True
    up = FlakySink(tmp_path / "us", name="archive:eu")
    recordings = _recordings(tmp_path)
    await recordings.submit(make_wav("a.wav"), _meta("for-down"), sink=down)
    await recordings.submit(make_wav("b.wav"), _meta("for-up"), sink=up)
    assert not await recordings.drain(5)  # "for-down" waits for its sink
    assert up.stored == 1 and [p.name for p in (tmp_path / "us").rglob("*.wav")] == ["for-up.wav"]
    down.broken = False
    await recordings.aclose(grace=0.1)

    again = _recordings(tmp_path)
    await again.add_sink(up)  # nothing of the other sink's is delivered to this one
    await again.add_sink(down)
    assert await again.drain(5)
    await again.aclose()
    assert up.stored == 1 and down.stored == 1
    assert [p.name for p in (tmp_path / "eu").rglob("*.wav")] == ["for-down.wav"]


async def test_recordings_an_earlier_version_spooled_for_a_safe_name_are_resumed(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    Spool(tmp_path / "spool" / SINKS_DIR / "archive").add(make_wav(), _meta("old-1"))
    sink = FlakySink(tmp_path / "out", name="archive")
    recordings = _recordings(tmp_path)
    await recordings.resume()
    await recordings.add_sink(sink)
    assert await recordings.drain(5)
    await recordings.aclose()
    assert sink.stored == 1


async def test_an_old_squashed_directory_is_pointed_at_not_taken(
    make_wav: MakeWav, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An earlier version spooled "archive eu"'s recordings in archive_eu, as it would
    # have "archive:eu"'s: nothing tells which, so none of them takes the directory.
    old = tmp_path / "spool" / SINKS_DIR / "archive_eu"
    Spool(old).add(make_wav(), _meta("old-1"))
    sink = FlakySink(tmp_path / "out", name="archive eu")
    recordings = _recordings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="voxtra.recording"):
        await recordings.add_sink(sink)
        await asyncio.sleep(0.05)
    await recordings.aclose()
    assert sink.stored == 0 and len(Spool(old).entries()) == 1
    [said] = [r.getMessage() for r in caplog.records if "earlier version" in r.getMessage()]
    assert said.startswith(f"1 recording(s) in {old} may be for sink 'archive eu': ")
    assert str(tmp_path / "spool" / SINKS_DIR / sink_dir_name("archive eu")) in said


async def test_resume_names_the_sink_its_waiting_recordings_are_for(
    make_wav: MakeWav, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FlakySink(tmp_path / "out", name="archive eu")
    sink.broken = True
    first = _recordings(tmp_path)
    await first.submit(make_wav(), _meta("rec-1"), sink=sink)
    await first.aclose(grace=0.1)
    again = _recordings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="voxtra.recording"):
        await again.resume()
    await again.aclose()
    said = [r.getMessage() for r in caplog.records if "wait until that sink" in r.getMessage()]
    assert said == [
        f"1 recording(s) spooled for sink {sink_dir_name('archive eu')!r} wait until that "
        "sink is used again (record_start(sink=...) or app.recordings.add_sink())"
    ]
