"""Fetching recordings from Asterisk, and recovering what a crash or shutdown left.

A small real HTTP server (aiohttp) stands in for Asterisk's ARI recordings endpoints,
so the real :class:`AriClient` streams over a real socket: chunks can be trickled,
the connection reset mid-body, a DELETE refused.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriConnectionError
from voxtra.recording import Backoff, LocalFileSink, RecordingMetadata
from voxtra.recording.app_recordings import AppRecordings

from .conftest import write_wav
from .helpers import FlakySink

FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.04, jitter=0.0)
NAME = "call-1-20261130T050000Z-0123456789ab"


@dataclass
class FakeAsterisk:
    """The ARI recordings endpoints over HTTP, with injectable faults."""

    stored: dict[str, bytes] = field(default_factory=dict)
    #: seconds between chunks of a download (0: all at once)
    trickle: float = 0.0
    chunks: int = 10
    #: the next N downloads send half the body, then reset the connection
    resets: int = 0
    #: downloads block (after sending headers) until this is set
    release: asyncio.Event | None = None
    fail_delete: bool = False
    downloads: int = 0
    deletes: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ari/recordings/stored", self._list)
        app.router.add_get("/ari/recordings/stored/{name}/file", self._file)
        app.router.add_delete("/ari/recordings/stored/{name}", self._delete)
        app.router.add_get("/ari/recordings/live/{name}", self._live)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": n, "format": "wav"} for n in self.stored])

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "Recording not found"}, status=404)

    async def _delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.fail_delete:
            return web.json_response({"message": "injected"}, status=500)
        if self.stored.pop(name, None) is None:
            return web.json_response({"message": "Recording not found"}, status=404)
        self.deletes.append(name)
        return web.Response(status=204)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        data = self.stored.get(name)
        if data is None:
            return web.json_response({"message": "Recording not found"}, status=404)
        self.downloads += 1
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = len(data)
        await response.prepare(request)
        if self.release is not None:
            await self.release.wait()
        if self.resets:
            self.resets -= 1
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.abort()  # a reset mid-body
            return response
        step = max(1, -(-len(data) // self.chunks))
        for start in range(0, len(data), step):
            await response.write(data[start : start + step])
            if self.trickle:
                await asyncio.sleep(self.trickle)
        await response.write_eof()
        return response


@pytest.fixture
async def asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = cast(Any, site._server).sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        if fake.release is not None:
            fake.release.set()
        await runner.cleanup()


def _recording(tmp_path: Path, seconds: float = 1.0) -> bytes:
    return write_wav(tmp_path / "source.wav", seconds).read_bytes()


def _meta(name: str = NAME) -> RecordingMetadata:
    return RecordingMetadata(name=name, call_id="call-1", caller="100", called_number="200")


def _stored_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _recordings(
    ari: AriClient, tmp_path: Path, sink: Any = None, **options: Any
) -> tuple[AppRecordings, list[RecordingMetadata]]:
    delivered: list[RecordingMetadata] = []
    recordings = AppRecordings(
        ari,
        sink or LocalFileSink(tmp_path / "out"),
        tmp_path / "spool",
        backoff=FAST,
        on_delivered=delivered.append,
        **options,
    )
    return recordings, delivered


# -- the download itself ---------------------------------------------------------------


async def test_download_that_keeps_sending_is_not_cut_by_a_total_timeout(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # 10 chunks 0.25 s apart: ~2.5 s in all, more than twice the client's 1 s timeout,
    # which used to be the limit for the whole download. Each gap is well inside it.
    data = _recording(tmp_path, 2.0)
    asterisk.stored[NAME] = data
    asterisk.trickle = 0.25
    async with AriClient(asterisk.url, "u", "p", timeout=1.0) as ari:
        target = tmp_path / "got.wav"
        size = await ari.recordings.download(NAME, target, chunk_size=1024)
    assert size == len(data)
    assert target.read_bytes() == data
    assert not target.with_name("got.wav.part").exists()


async def test_a_stalled_download_fails_typed_and_leaves_no_file(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    asterisk.stored[NAME] = _recording(tmp_path)
    asterisk.release = asyncio.Event()  # headers, then nothing
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        target = tmp_path / "got.wav"
        with pytest.raises(AriConnectionError):
            await ari.recordings.download(NAME, target, read_timeout=0.3)
    assert not target.exists() and not target.with_name("got.wav.part").exists()


async def test_a_reset_mid_download_is_retried_then_delivered(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    asterisk.resets = 2
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        recordings, delivered = _recordings(ari, tmp_path)
        await recordings.fetch_and_submit(_meta(), None)
        meta = await recordings.wait_delivered(NAME, timeout=10)
        assert await recordings.drain(10)
        await recordings.aclose()
    assert asterisk.downloads == 3
    assert [m.name for m in delivered] == [NAME]
    assert meta.sha256 == hashlib.sha256(data).hexdigest()
    [stored] = _stored_files(tmp_path / "out")
    assert stored.read_bytes() == data
    assert asterisk.deletes == [NAME]  # deleted from Asterisk after the sink confirmed
    assert list((tmp_path / "spool" / ".incoming").iterdir()) == []


async def test_a_fetch_that_keeps_failing_stays_journaled_for_the_next_start(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    asterisk.resets = 100
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        recordings, _ = _recordings(ari, tmp_path, retries=1)
        with pytest.raises(Exception, match="cannot fetch"):
            await recordings.fetch_and_submit(_meta(), None)
        await recordings.aclose()
        assert asterisk.downloads == 2
        asterisk.resets = 0
        again, delivered = _recordings(ari, tmp_path)
        assert await again.resume() == 1
        assert await again.drain(10)
        await again.aclose()
    assert [m.name for m in delivered] == [NAME]
    assert [p.read_bytes() for p in _stored_files(tmp_path / "out")] == [data]
    assert NAME not in asterisk.stored


# -- what an earlier run left in .incoming ------------------------------------------------


async def test_incoming_leftovers_are_recovered_at_start(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """Three crashes: after the fetch, mid-fetch, and before the fetch began."""
    complete = _recording(tmp_path, 1.0)
    refetched = _recording(tmp_path, 0.5)
    names = [f"call-{i}-20261130T050000Z-0123456789a{i}" for i in range(3)]
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        first, _ = _recordings(ari, tmp_path)
        incoming = first.incoming_dir
        for name in names:  # journaled, as record_start does before Asterisk records
            await first.begin(_meta(name), None)
        # names[0]: fetched completely, crash before spooling (Asterisk has it too).
        (incoming / f"{names[0]}.wav").write_bytes(complete)
        asterisk.stored[names[0]] = complete
        # names[1]: crash mid-download, half a file.
        (incoming / f"{names[1]}.wav.part").write_bytes(refetched[:100])
        asterisk.stored[names[1]] = refetched
        # names[2]: crash before fetching.
        asterisk.stored[names[2]] = refetched
        del first  # the crash: nothing closed, nothing drained

        again, delivered = _recordings(ari, tmp_path)
        scheduled = await again.resume()
        assert await again.drain(10)
        await again.aclose()
    assert scheduled == 3
    assert sorted(m.name for m in delivered) == names
    assert asterisk.downloads == 2  # the complete file was not fetched again
    assert sorted(asterisk.deletes) == names
    assert sorted(p.read_bytes() for p in _stored_files(tmp_path / "out")) == sorted(
        [complete, refetched, refetched]
    )
    assert list(incoming.iterdir()) == []


async def test_a_journal_whose_recording_asterisk_never_stored_is_given_up(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        first, _ = _recordings(ari, tmp_path)
        await first.begin(_meta(), None)
        again, delivered = _recordings(ari, tmp_path)
        await again.resume()
        assert await again.drain(10)
        await again.aclose()
    assert delivered == []
    assert list(again.incoming_dir.iterdir()) == []


# -- exactly once --------------------------------------------------------------------


async def test_delivered_but_not_deleted_is_never_delivered_again(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    asterisk.fail_delete = True
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        first, delivered = _recordings(ari, tmp_path)
        await first.fetch_and_submit(_meta(), None)
        assert await first.drain(10)
        await first.aclose()
        assert [m.name for m in delivered] == [NAME]
        assert NAME in asterisk.stored  # the delete failed
        asterisk.fail_delete = False
        # Even asked to recover every stored recording with our naming, it is not
        # delivered twice: the delete is retried instead.
        again, again_delivered = _recordings(ari, tmp_path, recover_unclaimed=True)
        assert await again.resume() == 0
        assert await again.drain(10)
        await again.aclose()
    assert again_delivered == []
    assert asterisk.deletes == [NAME] and asterisk.downloads == 1
    assert len(_stored_files(tmp_path / "out")) == 1
    assert not (tmp_path / "spool" / ".delivered" / NAME).exists()


async def test_unclaimed_stored_recordings_only_when_asked(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    asterisk.stored["someone-elses-name"] = data  # not our naming: never touched
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        shy, shy_delivered = _recordings(ari, tmp_path)
        assert await shy.resume() == 0
        await shy.aclose()
        assert shy_delivered == [] and asterisk.downloads == 0
        bold, delivered = _recordings(ari, tmp_path, recover_unclaimed=True)
        assert await bold.resume() == 1
        assert await bold.drain(10)
        await bold.aclose()
    [meta] = delivered
    assert meta.name == NAME and meta.call_id == "call-1"
    assert meta.started_at is not None and meta.started_at.year == 2026
    assert set(asterisk.stored) == {"someone-elses-name"}


# -- shutdown ------------------------------------------------------------------------


async def test_a_fetch_still_running_at_aclose_is_recovered_at_the_next_start(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    asterisk.release = asyncio.Event()  # the download hangs until released
    async with AriClient(asterisk.url, "u", "p", timeout=30.0) as ari:
        first, first_delivered = _recordings(ari, tmp_path)
        finishing = asyncio.create_task(first.fetch_and_submit(_meta(), None))
        first.track(finishing)  # as CallRecorder does with its finishing task
        while asterisk.downloads == 0:
            await asyncio.sleep(0.01)
        assert not await first.drain(0.1)
        await first.aclose(grace=0.2)
        assert finishing.cancelled()
        assert first_delivered == []
        asterisk.release.set()

        again, delivered = _recordings(ari, tmp_path)
        assert await again.resume() == 1
        assert await again.drain(10)
        await again.aclose()
    assert [m.name for m in delivered] == [NAME]
    assert [p.read_bytes() for p in _stored_files(tmp_path / "out")] == [data]


async def test_a_recording_finished_after_aclose_is_spooled_not_refused(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        sink = FlakySink(tmp_path / "out", name="archive")
        known = FlakySink(tmp_path / "out", name="known")
        first, first_delivered = _recordings(ari, tmp_path)
        await first.add_sink(known)
        await first.aclose()
        # ... and to a per-call sink that was already in use before the close.
        third = "call-3-20261130T050000Z-0123456789ab"
        asterisk.stored[third] = data
        await first.fetch_and_submit(_meta(third), known)
        # A call's teardown finishing late, to the default and to a per-call sink.
        await first.fetch_and_submit(_meta(), None)
        other = "call-2-20261130T050000Z-0123456789ab"
        asterisk.stored[other] = data
        await first.fetch_and_submit(_meta(other), sink)
        assert first_delivered == [] and first.pending == 0

        again, delivered = _recordings(ari, tmp_path)
        await again.resume()
        await again.add_sink(sink)
        await again.add_sink(known)
        assert await again.drain(10)
        await again.aclose()
    assert sorted(m.name for m in delivered) == sorted([NAME, other, third])
    assert sink.stored == 1 and known.stored == 1


async def test_a_fetched_file_without_journal_is_delivered_at_start(
    asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """What earlier versions left: a fetched file in .incoming and nothing else."""
    data = _recording(tmp_path)
    asterisk.stored[NAME] = data
    incoming = tmp_path / "spool" / ".incoming"
    incoming.mkdir(parents=True)
    (incoming / f"{NAME}.wav").write_bytes(data)
    async with AriClient(asterisk.url, "u", "p", timeout=5.0) as ari:
        recordings, delivered = _recordings(ari, tmp_path)
        assert await recordings.resume() == 1
        assert await recordings.drain(10)
        await recordings.aclose()
    [meta] = delivered
    assert meta.name == NAME and meta.call_id == "call-1"
    assert asterisk.downloads == 0 and asterisk.deletes == [NAME]
    assert [p.read_bytes() for p in _stored_files(tmp_path / "out")] == [data]
    assert list(incoming.iterdir()) == []
