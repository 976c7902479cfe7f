"""Tests of ``examples/voicemail.py`` against a real Asterisk (see test_hello.py)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voxtra import CallSession, VoxtraApp
from voxtra.recording import LocalFileSink
from voxtra.recording.app_recordings import RecordingResult
from voxtra.testing.local_caller import place_local_call
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk


def load_example(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stored_file(location: str) -> Path:
    assert location.startswith("file://"), location
    path = Path(location.removeprefix("file://"))
    assert path.is_file(), f"{path} was reported delivered but is not there"
    return path


async def test_a_message_ended_by_the_key_is_delivered_to_the_sink(
    asterisk: AsteriskTarget, tmp_path: Path
) -> None:
    voicemail = load_example("voicemail")
    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        recording_sink=LocalFileSink(tmp_path / "messages"),
        spool_dir=str(tmp_path / "spool"),
    )
    results: list[RecordingResult] = []

    @app.route(extension="2000")
    async def spied(call: CallSession) -> None:
        record = call.record

        async def spy(*args: Any, **kwargs: Any) -> RecordingResult:
            result = await record(*args, **kwargs)
            results.append(result)
            return result

        call.record = spy  # type: ignore[method-assign]
        await voicemail.voicemail(call)

    async with app:
        # The far end presses # 9 s after answering: the intro and the beep take ~6 s.
        caller = await place_local_call(
            app.ari, "2000", behaviour="dtmf", variables={"DIGITS": "#", "DTMF_DELAY": "9"}
        )
        for _ in range(100):
            if app.get_session(caller.call_id) is not None:
                break
            await asyncio.sleep(0.1)
        session = app.get_session(caller.call_id)
        assert session is not None
        while not results and not session.ended:
            await asyncio.sleep(0.1)
        await caller.hangup()
        assert results, "the handler never finished recording"
        assert app.recordings is not None
        meta = await app.recordings.wait_delivered(results[0].name, timeout=30)
    assert (results[0].reason, results[0].key) == ("finish_on_key", "#")
    assert meta.location is not None
    assert stored_file(meta.location).is_relative_to(tmp_path / "messages")
    assert meta.size_bytes and meta.size_bytes > 44  # more than a WAV header
