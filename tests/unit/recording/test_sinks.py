from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from voxtra.errors import ConfigError
from voxtra.recording import (
    CompositeDeliveryError,
    CompositeSink,
    DeliveryError,
    LocalFileSink,
    RecordingMetadata,
    RecordingSink,
    render_key,
)
from voxtra.recording.sinks import validate_key_template
from voxtra.recording.spool import Spool

from .conftest import MakeWav
from .helpers import FlakySink

START = datetime(2024, 3, 5, 23, 59, tzinfo=UTC)


def _meta(path: Path, **fields: object) -> RecordingMetadata:
    return RecordingMetadata.for_file(
        path, name="rec-1", call_id="1700000000.42", started_at=START, **fields
    )


def test_render_key_default_layout_and_sanitising(make_wav: MakeWav) -> None:
    meta = _meta(make_wav(), caller="+1 555/../0001", called_number=None)
    assert render_key("{date}/{call_id}/{name}.{fmt}", meta) == (
        "2024/03/05/1700000000.42/rec-1.wav"
    )
    assert render_key("{caller}/{called_number}/{name}", meta, prefix="/calls//in/") == (
        "calls/in/1_555_._0001/unknown/rec-1"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{date}/{nope}/{name}", "unknown field"),
        ("{date}/{call_id}", "must contain"),
        ("../{name}", "relative"),
        ("/abs/{name}", "relative"),
        ("{name!r}", "no format specs"),
        ("{date:%Y}/{name}", "no format specs"),
        ("{name", "malformed"),
    ],
)
def test_bad_key_templates_are_config_errors(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_key_template(template)
    with pytest.raises(ConfigError):
        LocalFileSink("/tmp", key_template=template)


async def test_local_sink_stores_atomically_and_idempotently(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    src = make_wav(seconds=0.5)
    meta = _meta(src)
    sink = LocalFileSink(tmp_path / "out")
    assert isinstance(sink, RecordingSink)
    location = await sink.deliver(src, meta)
    target = tmp_path / "out/2024/03/05/1700000000.42/rec-1.wav"
    assert location == target.resolve().as_uri()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == meta.sha256
    # A retry of the same recording replaces the file and leaves no temporaries.
    assert await sink.deliver(src, meta) == location
    assert [p.name for p in target.parent.iterdir()] == ["rec-1.wav"]


async def test_local_sink_measures_missing_facts_and_reports_failures(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    src = make_wav()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    sink = LocalFileSink(blocker)
    with pytest.raises(DeliveryError, match="local: cannot write"):
        await sink.deliver(src, RecordingMetadata(name="r", call_id="c", started_at=START))


async def test_composite_partial_failure_only_retries_the_failed_sink(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    src = make_wav()
    meta = _meta(src)
    good = FlakySink(tmp_path / "a", name="a")
    bad = FlakySink(tmp_path / "b", name="b", failures=1)
    composite = CompositeSink(good, bad)
    done: dict[str, str] = {}
    with pytest.raises(CompositeDeliveryError) as caught:
        await composite.deliver_tracked(src, meta, done)
    assert set(caught.value.failures) == {"b"}
    assert set(done) == set(caught.value.delivered) == {"a"}
    assert "injected failure #1" in str(caught.value)

    reported: list[str] = []

    async def note(sink: str, _location: str) -> None:
        reported.append(sink)

    locations = await composite.deliver_tracked(src, meta, done, on_sink_done=note)
    assert (len(good.calls), len(bad.calls)) == (1, 2)  # "a" was not uploaded again
    assert reported == ["b"]
    assert locations == [done["a"], done["b"]]
    assert locations[0].endswith("/a/2024/03/05/1700000000.42/rec-1.wav")
    await composite.aclose()
    assert good.closed and bad.closed


def test_composite_needs_unique_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        CompositeSink(LocalFileSink(tmp_path), LocalFileSink(tmp_path))
    with pytest.raises(ConfigError, match="at least one"):
        CompositeSink()


def _record_fsynced_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every directory fsynced from now on (files are left out)."""
    synced: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            synced.append(path)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_new_directories_are_fsynced_into_their_parents(
    make_wav: MakeWav, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory created for a recording is durable only once its parent is synced."""
    source = make_wav()
    synced = _record_fsynced_dirs(monkeypatch)
    sink = LocalFileSink(tmp_path / "out")
    meta = RecordingMetadata(name="rec-1", call_id="call-1")
    target = Path(unquote(urlparse(asyncio.run(sink.deliver(source, meta))).path))
    # out/<yyyy>/<mm>/<dd>/call-1/rec-1.wav: every directory from out down was new,
    # so each one's parent must have been synced, and the last one for the file.
    created = [d for d in target.parents if d.is_relative_to(tmp_path / "out")]
    assert len(created) == 5
    for directory in created:
        assert directory.parent.resolve() in synced, directory
    assert target.parent.resolve() in synced

    synced.clear()
    spool = Spool(tmp_path / "deep" / "spool")
    spool.add(source, meta)
    assert (tmp_path / "deep").resolve() in synced  # for the new "spool" entry
    assert tmp_path.resolve() in synced  # for the new "deep" entry
