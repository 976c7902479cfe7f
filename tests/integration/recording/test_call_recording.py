"""Call recording end to end against the real Asterisk: record, fetch, deliver, delete.

Each test runs its own Stasis app (a unique name, so parallel runs do not steal each
other's calls) and places a Local call whose far half plays a 1 kHz tone into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriConnectionError, AriNotFound
from voxtra.errors import ConfigError, RecordingError
from voxtra.recording import InvalidRecordingName, LocalFileSink, RecordingMetadata, S3Sink
from voxtra.recording.app_recordings import AppRecordings
from voxtra.testing.audio import dominant_frequency, read_wav
from voxtra.testing.storage import SeaweedS3Server

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]
Handler = Callable[[CallSession], Awaitable[Any]]


class Results:
    """What a handler returned or raised, for the test to pick up."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def wrap(self, body: Handler) -> Handler:
        async def handler(call: CallSession) -> None:
            try:
                self.queue.put_nowait(("ok", await body(call)))
            except BaseException as exc:
                self.queue.put_nowait(("error", exc))
                raise

        return handler

    async def get(self, timeout: float = 15.0) -> Any:
        kind, value = await asyncio.wait_for(self.queue.get(), timeout)
        if kind == "error":
            raise value
        return value


async def start_app(
    make_app: MakeApp, dirs: tuple[Path, Path], body: Handler, results: Results, **options: Any
) -> VoxtraApp:
    recordings, spool = dirs

    def configure(app: VoxtraApp) -> None:
        app.default(results.wrap(body))

    return await make_app(
        configure,
        app_name=f"voxtra-rec-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(recordings),
        spool_dir=str(spool),
        **options,
    )


async def call_app(app: VoxtraApp, playfile: str) -> tuple[str, str]:
    """A Local call into ``app`` (extension 1000) whose far half plays ``playfile``."""
    tag = uuid.uuid4().hex[:10]
    call_id, caller_leg = f"call-{tag}", f"caller-{tag}"
    await app.ari.channels.originate(
        "Local/play@voxtra-test",
        app=app.app_name,
        app_args="1000",
        channel_id=call_id,
        other_channel_id=caller_leg,
        caller_id="Tester <5551234>",
        timeout=10,
        variables={"PLAYFILE": playfile},
        formats="slin",
    )
    return call_id, caller_leg


def path_of(location: str | list[str] | None) -> Path:
    assert isinstance(location, str) and location.startswith("file://"), location
    return Path(unquote(urlparse(location).path))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def assert_gone_from_asterisk(ari: AriClient, name: str) -> None:
    with pytest.raises(AriNotFound):
        await ari.recordings.get_stored(name)


def assert_tone(path: Path, seconds: float, tolerance: float = 0.4) -> None:
    samples, rate = read_wav(path)
    assert rate == 8000
    assert abs(len(samples) / rate - seconds) < tolerance, len(samples) / rate
    # Skip the first and last 100 ms: the edges may hold silence or a partial frame.
    middle = samples[rate // 10 : -rate // 10]
    assert abs(dominant_frequency(middle, rate) - 1000.0) < 20.0
    assert abs(int(middle.max())) > 3000  # a real tone, not silence


async def test_record_start_stop_delivers_tone_to_local_dir(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()

    async def body(call: CallSession) -> tuple[str, str | None, str | None]:
        name = await call.record_start()
        assert call.recorder is not None
        target = call.recorder.target
        await asyncio.sleep(2.0)
        stopped = await call.record_stop()
        return name, stopped, target

    app = await start_app(make_app, dirs, body, results)
    call_id, _ = await call_app(app, tone_files[6.0])
    name, stopped, target = await results.get()
    assert stopped == name
    assert name.startswith(call_id + "-")
    assert target is not None and target.startswith("channel:voxtra-internal-snoop-")

    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=10)
    stored = path_of(meta.location)
    assert stored.is_relative_to(dirs[0])
    assert stored.name == f"{name}.wav"
    data = stored.read_bytes()
    assert meta.sha256 == sha256_of(data)
    assert meta.size_bytes == len(data)
    assert meta.call_id == call_id
    assert meta.called_number == "1000"
    assert meta.caller == "5551234"
    assert meta.format == "wav" and meta.sample_rate == 8000
    assert meta.duration is not None and abs(meta.duration - 2.0) < 0.4
    assert meta.started_at is not None and meta.ended_at is not None
    assert 1.8 < (meta.ended_at - meta.started_at).total_seconds() < 3.0
    assert_tone(stored, 2.0)
    await assert_gone_from_asterisk(ari, name)
    assert await app.recordings.drain(5)  # the entry goes right after the hook ran
    assert await app.recordings.spooled() == []
    assert list((dirs[1] / ".incoming").iterdir()) == []


async def test_recording_with_media_attached_records_the_conversation(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()

    async def body(call: CallSession) -> tuple[str, str | None]:
        await call.media()
        name = await call.record_start(name="with-media-" + uuid.uuid4().hex[:6])
        assert call.recorder is not None and call.media_path.transport is not None
        target = call.recorder.target
        assert target is not None and target.startswith("channel:voxtra-internal-snoop-")
        await asyncio.sleep(1.5)
        assert await call.record_stop() == name
        return name, target

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    name, _ = await results.get()
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=10)
    assert_tone(path_of(meta.location), 1.5)
    await assert_gone_from_asterisk(ari, name)


async def test_media_attached_during_a_recording_keeps_recording(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    """A channel that records cannot join a bridge (409): the snoop avoids that."""
    results = Results()

    async def body(call: CallSession) -> str:
        name = await call.record_start()
        await asyncio.sleep(0.7)
        await call.media()  # the caller moves into the media bridge
        await asyncio.sleep(1.3)
        stopped = await call.record_stop()
        assert stopped == name
        return name

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    name = await results.get()
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=10)
    assert_tone(path_of(meta.location), 2.0)
    await assert_gone_from_asterisk(ari, name)


async def test_stop_without_recording_bad_names_and_double_start(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()
    ari_calls: list[str] = []

    async def body(call: CallSession) -> dict[str, Any]:
        out: dict[str, Any] = {"stop_idle": await call.record_stop()}
        # Count every recording-related ARI request from here on.
        channels, bridges = call.app.ari.channels, call.app.ari.bridges
        for api, method in ((channels, "record"), (channels, "snoop"), (bridges, "record")):
            original = getattr(api, method)

            def spy(*args: Any, _original: Any = original, _m: str = method, **kw: Any) -> Any:
                ari_calls.append(_m)
                return _original(*args, **kw)

            setattr(api, method, spy)
        errors: list[BaseException] = []
        for bad in ("../etc/passwd", "a/b", "bad\nname", ".hidden", "x" * 200, "sp ace"):
            try:
                await call.record_start(name=bad)
            except InvalidRecordingName as exc:
                errors.append(exc)
        for kwargs in ({"fmt": "mp3"}, {"max_duration": -1}, {"max_silence": 1.5}):
            try:
                await call.record_start(**kwargs)
            except RecordingError as exc:
                errors.append(exc)
        other = LocalFileSink(dirs[0] / "other")  # named "local", like the default sink
        try:
            await call.record_start(sink=other)
        except ConfigError as exc:
            errors.append(exc)
        out["errors"] = errors
        out["calls_after_bad"] = list(ari_calls)
        name = await call.record_start()
        try:
            await call.record_start()
        except RecordingError as exc:
            out["double"] = exc
        assert await call.record_stop() == name
        out["stop_again"] = await call.record_stop()
        out["name"] = name
        return out

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    out = await results.get()
    assert out["stop_idle"] is None
    messages = [str(e) for e in out["errors"]]
    assert len(messages) == 10, messages
    assert "path separator" in messages[0] or ".." in messages[0]
    assert "path separator" in messages[1]
    assert "control characters" in messages[2]
    assert "start with '.'" in messages[3]
    assert "limit is 128" in messages[4]
    assert "outside [A-Za-z0-9_.-]" in messages[5]
    assert "unsupported recording format 'mp3'" in messages[6]
    assert "max_duration" in messages[7] and "max_silence" in messages[8]
    assert "distinct name" in messages[9]
    assert out["calls_after_bad"] == []  # rejected before any request to Asterisk
    assert isinstance(out["double"], RecordingError)
    assert "already recording" in str(out["double"])
    assert out["stop_again"] is None
    assert app.recordings is not None
    await app.recordings.wait_delivered(out["name"], timeout=10)


@pytest.mark.parametrize("with_media", [False, True], ids=["no-media", "media"])
async def test_caller_hangs_up_mid_recording_still_delivered(
    make_app: MakeApp,
    ari: AriClient,
    dirs: tuple[Path, Path],
    tone_files: dict[float, str],
    with_media: bool,
) -> None:
    results = Results()
    delivered: list[RecordingMetadata] = []

    async def body(call: CallSession) -> tuple[str, float]:
        if with_media:
            await call.media()
        name = await call.record_start()
        began = time.monotonic()
        await call.wait_ended(timeout=10)  # the 2 s tone ends, the caller hangs up
        return name, time.monotonic() - began

    app = await start_app(make_app, dirs, body, results)
    assert app.recordings is not None
    app.recordings.on_delivered = delivered.append
    started = time.monotonic()
    await call_app(app, tone_files[2.0])
    name, recorded_for = await results.get()
    meta = await app.recordings.wait_delivered(name, timeout=10)
    assert time.monotonic() - started < 8
    stored = path_of(meta.location)
    with wave.open(str(stored), "rb") as w:  # a complete WAV: header matches the data
        frames = w.getnframes()
        assert frames * 2 == stored.stat().st_size - 44
    # Whatever was left of the tone when recording began, up to the hang-up.
    assert recorded_for > 0.3
    assert_tone(stored, recorded_for, tolerance=0.3)
    await asyncio.sleep(0.5)
    assert [m.name for m in delivered] == [name]
    await assert_gone_from_asterisk(ari, name)


async def test_per_call_s3_sink_byte_identical(
    make_app: MakeApp,
    ari: AriClient,
    dirs: tuple[Path, Path],
    tone_files: dict[float, str],
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    results = Results()
    sink = S3Sink(
        s3_bucket,
        prefix="calls",
        endpoint_url=seaweed.endpoint_url,
        region=seaweed.region,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
    )

    async def body(call: CallSession) -> str:
        name = await call.record_start(sink=sink)
        await asyncio.sleep(1.5)
        assert await call.record_stop() == name
        return name

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    name = await results.get()
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=15)
    assert isinstance(meta.location, str) and meta.location.startswith(f"s3://{s3_bucket}/calls/")
    key = meta.location.removeprefix(f"s3://{s3_bucket}/")
    response = await s3_client.get_object(Bucket=s3_bucket, Key=key)
    async with response["Body"] as body_stream:
        data = await body_stream.read()
    assert sha256_of(data) == meta.sha256 and len(data) == meta.size_bytes
    assert response["Metadata"]["sha256"] == meta.sha256
    local = dirs[0] / "copy.wav"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    assert_tone(local, 1.5)
    await assert_gone_from_asterisk(ari, name)
    assert not any(dirs[0].rglob(f"{name}.wav"))  # not (also) in the default sink


async def test_storage_down_stays_spooled_then_resumed_on_next_start(
    make_app: MakeApp,
    ari: AriClient,
    dirs: tuple[Path, Path],
    tone_files: dict[float, str],
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    def s3_sink() -> S3Sink:
        return S3Sink(
            s3_bucket,
            endpoint_url=seaweed.endpoint_url,
            region=seaweed.region,
            access_key=seaweed.access_key,
            secret_key=seaweed.secret_key,
        )

    results = Results()

    async def body(call: CallSession) -> str:
        name = await call.record_start()
        await asyncio.sleep(1.0)
        assert await call.record_stop() == name
        return name

    app = await start_app(make_app, dirs, body, results, recording_sink=s3_sink())
    assert isinstance(app.recordings, AppRecordings)
    app.recordings.default.retries = 0  # give up at once: the test plays the restart
    seaweed.stop()
    try:
        await call_app(app, tone_files[6.0])
        name = await results.get()
        deadline = time.monotonic() + 10
        while not (entries := await app.recordings.spooled()) or not entries[0].exhausted:
            assert time.monotonic() < deadline, "delivery never failed"
            await asyncio.sleep(0.1)
        [entry] = entries
        assert entry.metadata.name == name and entry.attempts == 1
        assert entry.last_error and entry.metadata.sha256
        spooled = app.recordings.default.spool.audio_path(entry).read_bytes()
        assert sha256_of(spooled) == entry.metadata.sha256
        # Not confirmed, so Asterisk keeps its copy, byte for byte.
        assert sha256_of(await ari.recordings.get_file(name)) == entry.metadata.sha256
        await app.stop()
    finally:
        seaweed.start()

    again = await start_app(make_app, dirs, body, Results(), recording_sink=s3_sink())
    assert again.recordings is not None
    meta = await again.recordings.wait_delivered(name, timeout=15)
    assert meta.sha256 == entry.metadata.sha256
    key = str(meta.location).removeprefix(f"s3://{s3_bucket}/")
    response = await s3_client.get_object(Bucket=s3_bucket, Key=key)
    async with response["Body"] as body_stream:
        assert sha256_of(await body_stream.read()) == entry.metadata.sha256
    await assert_gone_from_asterisk(ari, name)
    assert await again.recordings.drain(5)
    assert await again.recordings.spooled() == []


async def test_recording_that_hit_max_duration_is_delivered_by_record_stop(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()

    async def body(call: CallSession) -> tuple[str, str | None, str]:
        first = await call.record_start(max_duration=1)
        await asyncio.sleep(3.0)  # Asterisk stops it after 1 s (1.4-1.7 s measured)
        second = await call.record_start()  # the finished one is delivered first
        await asyncio.sleep(0.5)
        assert await call.record_stop() == second
        return first, await call.record_stop(), second

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    first, stop_after, second = await results.get()
    assert stop_after is None
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(first, timeout=10)
    # Asterisk stopped it itself: about 1 s (1.4-1.7 s measured here), well short of 3 s.
    assert_tone(path_of(meta.location), 1.5, tolerance=0.6)
    # It ended when Asterisk stopped it, not 3 s in when record_start() delivered it
    # (ended_at said 4.0 s after started_at for a 1.24 s recording).
    assert meta.started_at is not None and meta.ended_at is not None
    assert meta.duration is not None
    span = (meta.ended_at - meta.started_at).total_seconds()
    assert abs(span - meta.duration) < 0.5, (span, meta.duration)
    second_meta = await app.recordings.wait_delivered(second, timeout=10)
    assert second_meta.started_at is not None and second_meta.started_at >= meta.ended_at
    await assert_gone_from_asterisk(ari, first)


async def test_a_name_in_use_is_refused_without_touching_the_other_recording(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    """Two calls given the same name: Asterisk refuses the second start (409), whose
    cleanup then deleted the first recording's journal while it was still recording,
    so a crash would have stranded it. A journal an earlier run left (its recording
    waits for its sink) was overwritten and deleted the same way."""
    results = Results()
    name = f"greeting-{uuid.uuid4().hex[:8]}"
    leftover = f"left-{uuid.uuid4().hex[:8]}"
    incoming = dirs[1] / ".incoming"
    incoming.mkdir(parents=True)
    journal = RecordingMetadata(name=leftover, call_id="earlier-run").model_dump_json()
    leftover_journal = incoming / f"{leftover}.meta.json"
    leftover_journal.write_text(f'{{"metadata": {journal}, "sink": "archive"}}')
    first_recording = asyncio.Event()
    second_refused = asyncio.Event()
    journals: dict[str, list[str]] = {}

    def journal_names() -> list[str]:
        return sorted(p.name for p in incoming.iterdir() if p.name.endswith(".meta.json"))

    async def body(call: CallSession) -> Any:
        if not first_recording.is_set():
            first_recording.set()
            assert await call.record_start(name=name) == name
            journals["before"] = journal_names()
            await asyncio.wait_for(second_refused.wait(), 10)
            journals["after"] = journal_names()
            return await call.record_stop()
        errors: list[RecordingError] = []
        try:
            for taken in (name, leftover):
                try:
                    await call.record_start(name=taken)
                except RecordingError as exc:
                    errors.append(exc)
        finally:
            second_refused.set()
        return errors

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    await asyncio.wait_for(first_recording.wait(), 10)
    await call_app(app, tone_files[6.0])
    errors = await results.get()
    assert [type(e) for e in errors] == [RecordingError, RecordingError], errors
    assert all("is in use" in str(e) for e in errors), errors
    assert await results.get() == name
    assert (
        journals["after"]
        == journals["before"]
        == sorted([f"{name}.meta.json", leftover_journal.name])
    )
    assert leftover_journal.read_text() == f'{{"metadata": {journal}, "sink": "archive"}}'
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=10)
    assert path_of(meta.location).name == f"{name}.wav"
    await assert_gone_from_asterisk(ari, name)


async def test_cancelled_record_stop_still_delivers_once(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()
    delivered: list[str] = []

    async def body(call: CallSession) -> tuple[str, bool, str | None]:
        name = await call.record_start()
        await asyncio.sleep(1.0)
        # The caller gives up as soon as the stop is under way (a timeout of a few ms
        # was not enough: on a quiet machine the whole stop took less).
        stop = asyncio.ensure_future(call.record_stop())
        await asyncio.sleep(0)
        stop.cancel()
        await asyncio.wait({stop})
        return name, stop.cancelled(), await call.record_stop()  # joins the stop under way

    app = await start_app(make_app, dirs, body, results)
    assert app.recordings is not None
    app.recordings.on_delivered = lambda meta: delivered.append(meta.name)
    await call_app(app, tone_files[6.0])
    name, cancelled, again = await results.get()
    # The stop went on without its caller: the second one joins it, or finds it done.
    assert cancelled and again in (name, None)
    meta = await app.recordings.wait_delivered(name, timeout=10)
    assert_tone(path_of(meta.location), 1.0)
    await asyncio.sleep(0.5)
    assert delivered == [name]
    await assert_gone_from_asterisk(ari, name)


async def _start_recovering_app(
    make_app: MakeApp, dirs: tuple[Path, Path], delivered: list[RecordingMetadata]
) -> VoxtraApp:
    """A fresh app on the same spool and sink, counting deliveries from its very start."""
    recordings, spool = dirs

    def configure(app: VoxtraApp) -> None:
        app.on_recording_delivered(delivered.append)

    return await make_app(
        configure,
        app_name=f"voxtra-rec-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(recordings),
        spool_dir=str(spool),
    )


async def test_recording_a_crashed_app_never_fetched_is_delivered_once_at_the_next_start(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()

    async def body(call: CallSession) -> tuple[str, BaseException | None]:
        name = await call.record_start()
        await asyncio.sleep(1.0)
        try:
            await call.record_stop()
        except RecordingError as exc:
            return name, exc
        return name, None

    app = await start_app(make_app, dirs, body, results)
    assert app.recordings is not None
    app.recordings.retries = 0

    async def unreachable(name: str, path: Path, *args: Any, **kwargs: Any) -> int:
        raise AriConnectionError(0, "GET", f"/recordings/stored/{name}/file", "injected")

    app.ari.recordings.download = unreachable  # type: ignore[method-assign]
    await call_app(app, tone_files[6.0])
    name, error = await results.get()
    assert isinstance(error, RecordingError) and "cannot fetch" in str(error)
    # The crash: this app is neither drained nor stopped. Asterisk holds the recording,
    # the spool its journal.
    assert (await ari.recordings.get_stored(name)).name == name
    assert (dirs[1] / ".incoming" / f"{name}.meta.json").is_file()
    assert await app.recordings.spooled() == []

    delivered: list[RecordingMetadata] = []
    again = await _start_recovering_app(make_app, dirs, delivered)
    assert again.recordings is not None
    meta = await again.recordings.wait_delivered(name, timeout=15)
    assert await again.recordings.drain(10)
    assert meta.call_id == name.split("-20")[0] and meta.caller == "5551234"
    stored = path_of(meta.location)
    assert_tone(stored, 1.0)
    assert [m.name for m in delivered] == [name]
    assert [p for p in dirs[0].rglob("*") if p.is_file()] == [stored]
    await assert_gone_from_asterisk(ari, name)
    assert list((dirs[1] / ".incoming").iterdir()) == []
    # A third start finds nothing left to deliver.
    third: list[RecordingMetadata] = []
    last = await _start_recovering_app(make_app, dirs, third)
    assert last.recordings is not None
    assert await last.recordings.drain(5)
    assert third == []


async def test_recording_still_being_fetched_at_shutdown_is_delivered_at_the_next_start(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    results = Results()
    fetching = asyncio.Event()

    async def body(call: CallSession) -> str:
        name = await call.record_start()
        await asyncio.sleep(1.0)
        results.queue.put_nowait(("ok", name))
        await call.record_stop()  # hangs in the fetch below
        return name

    app = await start_app(make_app, dirs, body, results)
    assert app.recordings is not None

    async def stuck(name: str, path: Path, *args: Any, **kwargs: Any) -> int:
        fetching.set()
        await asyncio.Event().wait()  # a remote Asterisk that stopped answering
        raise AssertionError("unreachable")

    app.ari.recordings.download = stuck  # type: ignore[method-assign]
    await call_app(app, tone_files[6.0])
    name = await results.get()
    await asyncio.wait_for(fetching.wait(), 15)
    # Shutdown's waits for teardowns and deliveries (30 s each by default), short here.
    app.teardown_timeout = 1.0
    app.delivery_timeout = 1.0
    await app.stop(deadline=0.5)  # the fetch is still running: shutdown interrupts it
    assert (await ari.recordings.get_stored(name)).name == name
    assert (dirs[1] / ".incoming" / f"{name}.meta.json").is_file()

    delivered: list[RecordingMetadata] = []
    again = await _start_recovering_app(make_app, dirs, delivered)
    assert again.recordings is not None
    meta = await again.recordings.wait_delivered(name, timeout=15)
    assert await again.recordings.drain(10)
    assert [m.name for m in delivered] == [name]
    assert [p for p in dirs[0].rglob("*") if p.is_file()] == [path_of(meta.location)]
    await assert_gone_from_asterisk(ari, name)


async def test_recording_is_stopped_and_delivered_when_the_call_goes_to_the_dialplan(
    make_app: MakeApp, ari: AriClient, dirs: tuple[Path, Path], tone_files: dict[float, str]
) -> None:
    """The caller's channel lives on after transfer_to("exten@context"), and with it the
    snoop and its recording: the app stops it. It used to run on in Asterisk, teardown
    stalled 10 s, and it was fetched at the next start only."""
    results = Results()

    async def body(call: CallSession) -> tuple[str, float]:
        name = await call.record_start()
        await asyncio.sleep(1.5)
        await call.transfer_to("answer@voxtra-test")  # answers, then waits 60 s
        return name, time.monotonic()

    app = await start_app(make_app, dirs, body, results)
    assert app.recordings is not None
    call_id, _ = await call_app(app, tone_files[6.0])
    try:
        name, transferred = await results.get()
        meta = await app.recordings.wait_delivered(name, timeout=10)
        delivered_after = time.monotonic() - transferred
        # Stopped by the app, not by a hang-up: the caller is still in the dialplan.
        caller = await ari.channels.get(call_id)
        assert caller.dialplan.context == "voxtra-test"
        assert delivered_after < 4.0, delivered_after  # the stall was 10 s
        assert_tone(path_of(meta.location), 1.5, tolerance=0.5)
        with pytest.raises(AriNotFound):
            await ari.recordings.get_live(name)
        await assert_gone_from_asterisk(ari, name)
        snoops = [c.id for c in await ari.channels.list() if c.name.startswith(f"Snoop/{call_id}")]
        assert snoops == []
        assert await app.recordings.drain(5)
        assert list((dirs[1] / ".incoming").iterdir()) == []
    finally:
        with contextlib.suppress(AriNotFound):
            await ari.channels.hangup(call_id)


async def test_a_recording_stopped_as_it_starts_is_delivered_as_a_finished_file(
    make_app: MakeApp,
    dirs: tuple[Path, Path],
    tone_files: dict[float, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopped at once: Asterisk closes a WAV with little or no audio and writes its
    sizes. It is delivered as it is, not taken (and logged) for a killed writer's file."""
    results = Results()

    async def body(call: CallSession) -> str | None:
        await call.record_start()
        return await call.record_stop()

    app = await start_app(make_app, dirs, body, results)
    await call_app(app, tone_files[6.0])
    name = await results.get()
    assert app.recordings is not None and name is not None
    meta = await app.recordings.wait_delivered(name, timeout=10)
    with wave.open(str(path_of(meta.location)), "rb") as stored:
        frames = stored.getnframes()
    assert meta.duration is not None and meta.duration == pytest.approx(frames / 8000)
    assert not [r for r in caplog.records if "never finished its WAV" in r.getMessage()]
