"""Names read back from disk or changed after validation never become paths outside
their directory (issue 16: ``"id": "../victim"`` in entry.json deleted a directory
beside the spool)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from voxtra.errors import ConfigError, RecordingError, VoxtraError
from voxtra.recording import (
    CompositeSink,
    InvalidRecordingName,
    LocalFileSink,
    RecordingDelivery,
    RecordingMetadata,
    RecordingSink,
    render_key,
)
from voxtra.recording.app_recordings import AppRecordings
from voxtra.recording.spool import InvalidSpoolEntry, Spool, validate_entry_id

from .conftest import MakeWav


def _meta(name: str = "rec-1") -> RecordingMetadata:
    return RecordingMetadata(name=name, call_id="call-1", caller="100", called_number="200")


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return victim


def _rewrite_entry(spool: Spool, entry_id: str, **changes: object) -> None:
    path = spool.directory / entry_id / "entry.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "bad_id",
    [
        "../victim",
        "..",
        ".",
        "",
        "/tmp/x.0123abcd",
        "a/../../victim.0123abcd",
        "rec-1",
        ".q.01234567",
    ],
)
def test_validate_entry_id_rejects_anything_add_would_not_create(bad_id: str) -> None:
    with pytest.raises(InvalidSpoolEntry) as info:
        validate_entry_id(bad_id)
    assert isinstance(info.value, RecordingError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, VoxtraError)


def test_validate_entry_id_accepts_what_add_creates(make_wav: MakeWav, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    entry = spool.add(make_wav(), _meta("x" * 128))  # the longest name still makes an id
    assert validate_entry_id(entry.id) == entry.id
    assert [e.id for e in spool.entries()] == [entry.id]


async def test_a_traversing_id_in_entry_json_is_quarantined_not_followed(
    make_wav: MakeWav, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = _victim(tmp_path)
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    entry = spool.add(make_wav(), _meta())
    # "confirmed": only the hook and the removal are left, so a followed id is deleted.
    _rewrite_entry(spool, entry.id, id="../victim", confirmed=True)

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="voxtra.recording"):
        async with RecordingDelivery(LocalFileSink(out), spool_dir) as delivery:
            scheduled = await delivery.resume()
            assert await delivery.drain(timeout=5)
            assert (victim / "precious.txt").read_text() == "keep me"
            assert scheduled == 0
            assert await delivery.spooled() == []

    assert not out.exists()  # nothing was delivered from the bad entry
    [kept] = list((spool_dir / ".quarantine").iterdir())
    assert kept.name.startswith(entry.id) and (kept / "entry.json").is_file()
    assert any("quarantined bad spool entry" in r.getMessage() for r in caplog.records)
    assert not (spool_dir / entry.id).exists()


def test_an_entry_whose_id_is_not_its_directory_is_quarantined(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.add(make_wav(), _meta("rec-1"))
    second = spool.add(make_wav("b.wav"), _meta("rec-2"))
    # A valid-looking id, but another entry's: removing "this" one would delete that one.
    _rewrite_entry(spool, second.id, id=first.id)
    assert [e.id for e in spool.entries()] == [first.id]
    assert (spool.directory / first.id / "entry.json").is_file()


def test_a_traversing_audio_file_is_quarantined(make_wav: MakeWav, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    spool = Spool(tmp_path / "spool")
    entry = spool.add(make_wav(), _meta())
    _rewrite_entry(spool, entry.id, audio_file="../../victim/precious.txt")
    assert spool.entries() == []
    assert (victim / "precious.txt").read_text() == "keep me"


def test_remove_refuses_an_id_changed_in_memory(make_wav: MakeWav, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    spool = Spool(tmp_path / "spool")
    entry = spool.add(make_wav(), _meta())
    entry.id = "../victim"
    with pytest.raises(InvalidSpoolEntry):
        spool.remove(entry)
    with pytest.raises(InvalidSpoolEntry):
        spool.audio_path(entry)
    assert (victim / "precious.txt").read_text() == "keep me"


def test_add_rechecks_a_name_set_after_validation(make_wav: MakeWav, tmp_path: Path) -> None:
    meta = _meta()
    meta.name = "../../victim"
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidRecordingName):
        spool.add(make_wav(), meta)
    assert not (tmp_path / "victim").exists()


@pytest.mark.parametrize("bad", ["..", "../../etc/passwd", "a/b", ".hidden", ""])
def test_render_key_rechecks_a_name_set_after_validation(bad: str) -> None:
    meta = _meta()
    meta.name = bad  # no validation on assignment
    with pytest.raises(InvalidRecordingName):
        render_key("{date}/{name}.{fmt}", meta)


async def test_local_sink_never_writes_outside_its_directory(
    make_wav: MakeWav, tmp_path: Path
) -> None:
    meta = _meta()
    meta.name = "../../escaped"
    sink = LocalFileSink(tmp_path / "out", key_template="{name}.{fmt}")
    with pytest.raises(InvalidRecordingName):
        await sink.deliver(make_wav(), meta)
    assert not (tmp_path / "escaped.wav").exists()


# -- recordings stored inside the spool ------------------------------------------------


async def test_a_directory_that_holds_no_entry_is_left_alone(
    make_wav: MakeWav, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Recordings a sink stored in the spool were moved into its quarantine at the next
    # start: a directory without entry.json is not an entry, whatever its name.
    spool_dir = tmp_path / "data"
    stored = spool_dir / "recordings" / "2026" / "12" / "01" / "c1" / "a.wav"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"RIFF")
    spool = Spool(spool_dir)
    entry = spool.add(make_wav(), _meta())
    with caplog.at_level(logging.WARNING, logger="voxtra.recording"):
        assert [e.id for e in spool.entries()] == [entry.id]
        assert [e.id for e in spool.entries()] == [entry.id]
        async with RecordingDelivery(LocalFileSink(tmp_path / "out"), spool_dir) as delivery:
            assert await delivery.resume() == 1
            assert await delivery.drain(timeout=5)
    assert stored.read_bytes() == b"RIFF"
    assert not (spool_dir / ".quarantine").exists()
    said = [r.getMessage() for r in caplog.records if "no spool entry" in r.getMessage()]
    assert len(said) == 2  # once per Spool: the test's, and the delivery's
    assert said[0].startswith("recordings in the spool ")


@pytest.mark.parametrize(
    "sink_in",
    [
        lambda spool: LocalFileSink(spool / "recordings"),
        lambda spool: LocalFileSink(spool),
        lambda spool: LocalFileSink(spool / "x" / ".." / "rec", name="dotted"),
        lambda spool: CompositeSink(
            LocalFileSink(spool.parent / "out", name="outside"),
            LocalFileSink(spool / "archive", name="inside"),
        ),
    ],
)
def test_a_local_sink_storing_into_the_spool_is_refused(
    sink_in: Callable[[Path], RecordingSink], tmp_path: Path
) -> None:
    spool = tmp_path / "data"
    with pytest.raises(ConfigError, match="or inside it") as info:
        AppRecordings(cast(Any, object()), sink_in(spool), spool)
    assert str(spool) in str(info.value)
    with pytest.raises(ConfigError, match="or inside it"):
        RecordingDelivery(sink_in(spool), spool)
    assert not spool.exists()


async def test_a_per_call_sink_storing_into_the_spool_is_refused_before_recording(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    recordings = AppRecordings(cast(Any, object()), LocalFileSink(tmp_path / "out"), spool)
    # Inside the whole spool, not only inside its own (<spool>/.sinks/archive).
    inside = LocalFileSink(spool / "archive", name="archive")
    with pytest.raises(ConfigError, match="recording sink 'archive' stores into"):
        recordings.check_sink(inside)  # what record_start() asks before Asterisk records
    with pytest.raises(ConfigError, match="or inside it"):
        await recordings.add_sink(inside)
    beside = LocalFileSink(tmp_path / "spool-archive", name="beside")  # a shared prefix
    recordings.check_sink(beside)
    await recordings.add_sink(beside)
    await recordings.aclose()
