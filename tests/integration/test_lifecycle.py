"""App lifecycle against the real Asterisk: drain at stop, max_call_duration, and two
processes serving one Stasis app name.

Each test uses its own Stasis app name (Local calls are sent to it with ``app=``), so
runs in parallel with other tests do not steal each other's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from voxtra import CallEndReason, CallSession
from voxtra.app import INSTANCE_VARIABLE, VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriNotFound
from voxtra.errors import CallEnded
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.sinks import LocalFileSink

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]
PEER = Path(__file__).with_name("_peer_app.py")


def app_name(kind: str) -> str:
    return f"voxtra-{kind}-{uuid.uuid4().hex[:8]}"


async def call_into(ari: AriClient, app: str, behaviour: str = "answer") -> tuple[str, str]:
    """A Local call into Stasis app ``app`` (extension 1000); (call id, caller leg)."""
    tag = uuid.uuid4().hex[:10]
    call_id, caller_leg = f"call-{tag}", f"caller-{tag}"
    await ari.channels.originate(
        f"Local/{behaviour}@voxtra-test",
        app=app,
        app_args="1000",
        channel_id=call_id,
        other_channel_id=caller_leg,
        timeout=10,
        formats="slin",
    )
    return call_id, caller_leg


async def exists(ari: AriClient, channel_id: str) -> bool:
    try:
        await ari.channels.get(channel_id)
    except AriNotFound:
        return False
    return True


async def gone(ari: AriClient, channel_id: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await exists(ari, channel_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"channel {channel_id} still exists")


# -- drain at stop ------------------------------------------------------------------------


async def test_stop_lets_a_recording_call_finish_and_deliver(
    make_app: MakeApp, ari: AriClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call recording at stop(): its recording is fetched and delivered before stop returns.

    The call owns a helper task that takes 6 s to clean up when cancelled, so the call's
    teardown (which finalises the recording after its tasks) outlives the old fixed 5 s
    shutdown wait: that cancelled the teardown and closed delivery under it ("recording
    delivery is closed"), and the recording was never fetched from Asterisk.
    """
    started = asyncio.Event()
    names: list[str] = []
    delivered: list[RecordingMetadata] = []

    def configure(app: VoxtraApp) -> None:
        app.on_recording_delivered(delivered.append)

        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            names.append(await call.record_start())

            async def slow_cleanup() -> None:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    await asyncio.sleep(6.0)
                    raise

            call.spawn(slow_cleanup())
            started.set()
            await asyncio.Event().wait()

    app = await make_app(
        configure,
        app_name=app_name("drain"),
        handler_deadline=0.5,
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
    )
    call_id, _ = await call_into(ari, app.app_name)
    await asyncio.wait_for(started.wait(), 15)
    await asyncio.sleep(1.0)  # something to record
    with caplog.at_level(logging.WARNING, logger="voxtra"):
        await app.stop()
    assert [m.name for m in delivered] == names
    assert delivered[0].location is not None
    assert "delivery is closed" not in caplog.text
    await gone(ari, call_id)
    with pytest.raises(AriNotFound):  # delivered, so deleted from Asterisk
        await ari.recordings.get_stored(names[0])


class StalledSink:
    """A sink whose storage does not answer (until ``release`` is set)."""

    name = "default"

    def __init__(self, directory: Path) -> None:
        self.inner = LocalFileSink(directory)
        self.release = asyncio.Event()
        self.calls = 0

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        self.calls += 1
        await self.release.wait()
        return await self.inner.deliver(path, meta)


async def test_a_recording_not_delivered_at_stop_is_delivered_by_the_next_start(
    asterisk: Any, ari: AriClient, tmp_path: Path
) -> None:
    """Storage stalls during shutdown: stop() returns after ``delivery_timeout`` with the
    recording spooled, and the next start() with the same spool delivers it once."""
    name = app_name("drain")
    spool, recordings = tmp_path / "spool", tmp_path / "recordings"
    stalled = StalledSink(recordings)
    started = asyncio.Event()
    names: list[str] = []
    first = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        name,
        environ={},
        handler_deadline=0.5,
        spool_dir=str(spool),
        recording_sink=stalled,
    )
    first.delivery_timeout = 1.0

    @first.default
    async def handler(call: CallSession) -> None:
        await call.answer()
        names.append(await call.record_start())
        started.set()
        await call.listen_dtmf(timeout=60)

    await first.start()
    try:
        call_id, _ = await call_into(ari, name)
        await asyncio.wait_for(started.wait(), 15)
        await asyncio.sleep(1.0)
    finally:
        await first.stop()
    await gone(ari, call_id)
    assert stalled.calls >= 1 and not list(recordings.rglob("*.wav"))

    delivered: list[RecordingMetadata] = []
    second = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        name,
        environ={},
        spool_dir=str(spool),
        recording_sink=LocalFileSink(recordings),
    )
    second.on_recording_delivered(delivered.append)
    await second.start()
    try:
        assert second.recordings is not None
        meta = await second.recordings.wait_delivered(names[0], timeout=20)
    finally:
        await second.stop()
    assert [m.name for m in delivered] == names
    assert meta.location is not None and len(list(recordings.rglob("*.wav"))) == 1


async def test_a_call_arriving_during_stop_is_hung_up(
    make_app: MakeApp, ari: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()
    handled: list[str] = []

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            handled.append(call.id)
            await call.answer()
            started.set()
            with pytest.raises(CallEnded):
                await call.listen_dtmf(timeout=60)

    app = await make_app(configure, app_name=app_name("drain"), handler_deadline=3.0)
    await call_into(ari, app.app_name)
    await asyncio.wait_for(started.wait(), 15)
    with caplog.at_level(logging.WARNING, logger="voxtra"):
        stopping = asyncio.ensure_future(app.stop())
        await asyncio.sleep(0.5)  # within handler_deadline: still connected, draining
        late, _ = await call_into(ari, app.app_name)
        await gone(ari, late)
        await stopping
    assert len(handled) == 1
    assert f"takes no new calls: hanging up {late}" in caplog.text


# -- max_call_duration ------------------------------------------------------------------


async def test_max_call_duration_hangs_up_with_a_reason(
    make_app: MakeApp, ari: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    sessions: list[CallSession] = []
    ended = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            sessions.append(call)
            await call.answer()
            try:
                await call.listen_dtmf(timeout=60)
            finally:
                ended.set()

    app = await make_app(configure, app_name=app_name("limit"), max_call_duration=1.5)
    with caplog.at_level(logging.WARNING, logger="voxtra"):
        call_id, caller_leg = await call_into(ari, app.app_name)
        await asyncio.wait_for(ended.wait(), 20)
        await gone(ari, call_id)
        await gone(ari, caller_leg)
    assert sessions[0].end_reason is CallEndReason.MAX_DURATION
    assert f"call {call_id} reached max_call_duration (1.5 s): hanging up" in caplog.text
    assert sessions[0].duration >= 1.0  # not hung up at once


async def test_a_call_ended_by_the_caller_says_so(make_app: MakeApp, ari: AriClient) -> None:
    sessions: list[CallSession] = []
    ended = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            sessions.append(call)
            await call.answer()
            try:
                await call.listen_dtmf(timeout=60)
            finally:
                ended.set()

    app = await make_app(configure, app_name=app_name("limit"), max_call_duration=30)
    _, caller_leg = await call_into(ari, app.app_name)
    while not sessions:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await ari.channels.hangup(caller_leg)
    await asyncio.wait_for(ended.wait(), 10)
    assert sessions[0].end_reason is CallEndReason.REMOTE


async def test_a_call_transferred_into_the_dialplan_says_so(
    make_app: MakeApp, ari: AriClient
) -> None:
    sessions: list[CallSession] = []

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            sessions.append(call)
            await call.answer()
            await call.transfer_to("answer@voxtra-test")

    app = await make_app(configure, app_name=app_name("limit"))
    call_id, caller_leg = await call_into(ari, app.app_name)
    deadline = time.monotonic() + 15
    while not (sessions and sessions[0].ended) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sessions[0].end_reason is CallEndReason.TRANSFERRED
    assert await exists(ari, call_id)  # still up, in the dialplan
    await ari.channels.hangup(caller_leg)


# -- one app name, two processes --------------------------------------------------------


class Peer:
    """A VoxtraApp in another OS process (tests/integration/_peer_app.py)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, asterisk: Any, app: str) -> Peer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PEER),
            asterisk.ari_url,
            asterisk.username,
            asterisk.password,
            app,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        peer = cls(proc)
        await peer.wait_for(lambda line: line["kind"] == "ready", 20)
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                continue
            self._new.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not seen within {timeout} s; got {self.lines}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    def calls(self) -> list[str]:
        return [line["id"] for line in self.lines if line["kind"] == "call"]

    def logs(self, level: str) -> list[str]:
        return [
            line["message"]
            for line in self.lines
            if line["kind"] == "log" and line["level"] == level
        ]

    async def stop(self) -> int:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self._reader
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def tagged(ari: AriClient, channel_id: str, within: float = 2.0) -> str:
    """The call's instance tag, once it has landed (AriNotFound until then)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return str(await ari.channels.get_variable(channel_id, INSTANCE_VARIABLE))
        except AriNotFound:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def test_a_second_process_with_the_same_app_name_breaks_nothing(
    ari: AriClient, asterisk: Any
) -> None:
    name = app_name("twice")
    first = await Peer.start(asterisk, name)
    second: Peer | None = None
    try:
        call_id, _ = await call_into(ari, name)
        await first.wait_for(lambda line: line.get("id") == call_id, 15)
        # The tag's request goes out as the handler starts (voxtra/app.py, _run_call):
        # it lands within a round trip of it, not necessarily before the handler's first
        # line (a CI run read it 404 when the tag needed a new connection).
        instance = await tagged(ari, call_id)
        assert instance == first.lines[0]["instance"]

        second = await Peer.start(asterisk, name)
        # The first is told, at ERROR level, that its app was taken over ...
        await first.wait_for(
            lambda line: line.get("level") == "ERROR" and "took over" in line["message"], 10
        )
        # ... and its live call outlives the second's start and reconcile.
        await asyncio.sleep(2.0)
        assert await exists(ari, call_id)
        assert second.calls() == []
        # New calls go to the second meanwhile.
        other, _ = await call_into(ari, name)
        await second.wait_for(lambda line: line.get("id") == other, 15)

        assert await second.stop() == 0
        second = None
        await first.wait_for(
            lambda line: line.get("level") == "WARNING" and "taking it back" in line["message"],
            15,
        )
        # The first takes calls again (retry while its reconnect registers the app).
        deadline = time.monotonic() + 20
        answered = False
        while not answered and time.monotonic() < deadline:
            again, _ = await call_into(ari, name)
            try:
                await first.wait_for(lambda line, again=again: line.get("id") == again, 3)
                answered = True
            except AssertionError:
                continue
        assert answered, first.lines
        assert await exists(ari, call_id)  # the first call is still up
        assert await first.stop() == 0
        await gone(ari, call_id)
    finally:
        for peer in (second, first):
            if peer is not None:
                peer.kill()
