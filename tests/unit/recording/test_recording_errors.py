"""What ``record_start``/``record_stop`` raise when the spool's disk or Asterisk fails
them: a RecordingError saying what to check, never a bare OSError or TimeoutError, and
no recording lost (FakeAsterisk).

A full spool disk used to raise OSError out of both, and a fetch that failed on it was
not retried until the next start; an Asterisk that did not start a recording (or its
snoop, or the beep before it) raised a bare TimeoutError.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from fake_apps import routed_app

from voxtra.calls import recorder
from voxtra.calls.session import CallSession
from voxtra.errors import RecordingError
from voxtra.recording import Backoff, RecordingMetadata
from voxtra.recording import app_recordings as app_recordings_module
from voxtra.recording.app_recordings import AsteriskRecordingFailed, RecordingNotStarted
from voxtra.testing.fake_asterisk import FakeAsterisk
from voxtra.testing.fake_asterisk.calls import FakeCall

FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.02, jitter=0.0)
SLOW = Backoff(initial=0.05, multiplier=2.0, cap=0.1, jitter=0.0)


def _disk_full(*_: Any, **__: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _snoops(fake: FakeAsterisk) -> list[FakeCall]:
    return [c for c in fake.channels.values() if c.kind == "snoop" and not c.ended]


async def _run(
    fake: FakeAsterisk, tmp_path: Path, handler: Any, *, beep: bool = False
) -> dict[str, Any]:
    """Run ``handler(call, seen)`` on one incoming call; what it put in ``seen``."""
    seen: dict[str, Any] = {}

    async def body(call: CallSession) -> None:
        await call.answer()
        await handler(call, seen)

    app = routed_app(tmp_path, "rec-errors", body)
    async with fake.serve(app):
        caller = await fake.incoming(extension="100")
        await caller.wait_ended(15)
        await fake.wait_until(lambda: not app.active_sessions)
        seen["snoops"] = _snoops(fake)
        seen["live"] = dict(fake.live_recordings)
        seen["stored"] = set(fake.stored_recordings)
    return seen


def _incoming(tmp_path: Path) -> list[str]:
    directory = tmp_path / "spool" / ".incoming"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def test_a_spool_that_cannot_journal_refuses_record_start(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def handler(call: CallSession, seen: dict[str, Any]) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(app_recordings_module, "_write_durably", _disk_full)
            with pytest.raises(RecordingError) as raised:
                await call.record_start("full-rec")
        seen["error"] = raised.value
        # The disk has room again: the next start records.
        seen["again"] = await call.record_start("full-rec")
        seen["stopped"] = await call.record_stop()

    seen = await _run(fake_asterisk, tmp_path, handler)
    error = seen["error"]
    assert "not started" in str(error) and "free space" in str(error)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert seen["again"] == seen["stopped"] == "full-rec"
    # Nothing was recorded of the refused one: no snoop, no recording left behind.
    assert seen["snoops"] == [] and seen["live"] == {}
    assert _incoming(tmp_path) == []


async def test_a_full_disk_while_fetching_keeps_the_recording_and_retries_it(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered: list[RecordingMetadata] = []

    async def handler(call: CallSession, seen: dict[str, Any]) -> None:
        recordings = call.context.host.recordings
        recordings.retries, recordings.backoff, recordings.slow_backoff = 1, FAST, SLOW
        ari = recordings.ari.recordings
        download = ari.download
        full = True

        async def fetch(*args: Any, **kwargs: Any) -> int:
            if full:
                _disk_full()
            return int(await download(*args, **kwargs))

        monkeypatch.setattr(ari, "download", fetch)
        await call.record_start("full-fetch")
        with pytest.raises(RecordingError) as raised:
            await call.record_stop()
        seen["error"] = raised.value
        # Not lost: stored in Asterisk, and journaled for a fetch now and at a start.
        seen["in_asterisk"] = "full-fetch" in fake_asterisk.stored_recordings
        seen["journal"] = _incoming(tmp_path)
        full = False  # space freed: the background retry delivers it
        delivered.append(await recordings.wait_delivered("full-fetch", timeout=10))

    seen = await _run(fake_asterisk, tmp_path, handler)
    error = seen["error"]
    assert "into the spool" in str(error) and "free space" in str(error)
    assert "retried in the background" in str(error)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert seen["in_asterisk"] and seen["journal"] == ["full-fetch.meta.json"]
    assert [m.name for m in delivered] == ["full-fetch"]
    assert delivered[0].local_path is not None and delivered[0].local_path.is_file()
    assert "full-fetch" not in seen["stored"]  # deleted once the sink had it
    assert seen["snoops"] == [] and _incoming(tmp_path) == []


def _no_recording_started(fake: FakeAsterisk, monkeypatch: pytest.MonkeyPatch) -> None:
    emit = fake._emit

    def emit_but_started(apps: Any, kind: str, **fields: Any) -> None:
        if kind != "RecordingStarted":
            emit(apps, kind, **fields)

    monkeypatch.setattr(fake, "_emit", emit_but_started)


def _no_snoop_enters(fake: FakeAsterisk, monkeypatch: pytest.MonkeyPatch) -> None:
    enter = fake._enter_app

    def enter_but_snoops(call: FakeCall, app: str, args: list[str]) -> None:
        if call.kind != "snoop":
            enter(call, app, args)

    monkeypatch.setattr(fake, "_enter_app", enter_but_snoops)


def _beep_never_ends(fake: FakeAsterisk, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake, "playback_duration", 30.0)


@pytest.mark.parametrize(
    ("stall", "timeout", "said"),
    [
        (_no_recording_started, "START_TIMEOUT", "Asterisk did not start it"),
        (_no_snoop_enters, "SNOOP_TIMEOUT", "its snoop channel"),
        (_beep_never_ends, "BEEP_TIMEOUT", "the beep before it"),
    ],
    ids=["no RecordingStarted", "no snoop", "beep stalls"],
)
async def test_a_recording_asterisk_does_not_start_raises_recording_not_started(
    fake_asterisk: FakeAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stall: Any,
    timeout: str,
    said: str,
) -> None:
    monkeypatch.setattr(recorder, timeout, 0.3)

    async def handler(call: CallSession, seen: dict[str, Any]) -> None:
        with monkeypatch.context() as patch:
            stall(fake_asterisk, patch)
            with pytest.raises(RecordingError) as raised:
                await call.record_start("stuck-rec", beep=True)
        seen["error"] = raised.value
        seen["playbacks"] = dict(fake_asterisk.playbacks)

    seen = await _run(fake_asterisk, tmp_path, handler)
    error = seen["error"]
    assert isinstance(error, RecordingNotStarted) and isinstance(error, AsteriskRecordingFailed)
    assert error.name == "stuck-rec" and said in str(error)
    assert isinstance(error.__cause__, TimeoutError)
    # Cancelled, not left running: no snoop, no recording, no beep, no journal.
    assert seen["snoops"] == [] and seen["live"] == {} and "stuck-rec" not in seen["stored"]
    assert seen["playbacks"] == {}
    assert _incoming(tmp_path) == []
