"""Delivered metadata points at where the recording is now, not at the spool or the
download it came from (issue 14, item 9)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from voxtra.recording import CompositeSink, LocalFileSink, RecordingDelivery, RecordingMetadata

from .conftest import MakeWav
from .helpers import BlockingSink


def _meta(source: Path) -> RecordingMetadata:
    # As the call recorder builds it: local_path is where the file was fetched to.
    return RecordingMetadata(name="rec-1", call_id="call-1", local_path=source)


async def _deliver(sink: object, source: Path, spool: Path) -> RecordingMetadata:
    delivered: list[RecordingMetadata] = []
    async with RecordingDelivery(sink, spool, on_delivered=delivered.append) as delivery:  # type: ignore[arg-type]
        await delivery.submit(source, _meta(source), move=True)
        assert await delivery.drain(timeout=10)
    assert len(delivered) == 1
    return delivered[0]


async def test_local_sink_metadata_names_the_stored_file(make_wav: MakeWav, tmp_path: Path) -> None:
    source = make_wav("fetched.wav")
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    meta = await _deliver(LocalFileSink(tmp_path / "out"), source, tmp_path / "spool")
    assert not source.exists()  # moved into the spool, then the spool entry went
    assert meta.local_path is not None
    assert meta.local_path.is_file(), meta.local_path
    assert meta.local_path.is_relative_to(tmp_path / "out")
    assert hashlib.sha256(meta.local_path.read_bytes()).hexdigest() == sha == meta.sha256
    assert meta.local_path.resolve().as_uri() == meta.location


async def test_remote_sink_metadata_has_no_local_path(make_wav: MakeWav, tmp_path: Path) -> None:
    source = make_wav("fetched.wav")
    sink = BlockingSink()
    sink.release.set()
    meta = await _deliver(sink, source, tmp_path / "spool")
    assert meta.location == "blocked://rec-1"
    assert meta.local_path is None  # there is no local copy any more


async def test_composite_metadata_names_the_local_copy(make_wav: MakeWav, tmp_path: Path) -> None:
    source = make_wav("fetched.wav")
    remote = BlockingSink()
    remote.release.set()
    sink = CompositeSink(remote, LocalFileSink(tmp_path / "out", name="disk"))
    meta = await _deliver(sink, source, tmp_path / "spool")
    assert isinstance(meta.location, list) and len(meta.location) == 2
    assert meta.local_path is not None and meta.local_path.is_file()
    assert meta.local_path.is_relative_to(tmp_path / "out")
