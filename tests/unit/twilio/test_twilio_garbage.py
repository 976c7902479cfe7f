"""A Twilio call leaves no reference cycle either (tests/unit/test_call_garbage.py
says why): with the cyclic collector off, its session and parts go once the app and
the user let go of them."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from garbage import collector_off, cyclic_garbage
from twilio_rig import make_app, running

from voxtra import CallBusy, CallFailed, CallSession
from voxtra.media.frames import AudioChunk, Codec
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import FakeTwilio
from voxtra.twilio import TwilioApiError

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def no_collector() -> Iterator[None]:
    with collector_off():
        yield


async def test_a_twilio_call_is_freed_without_the_cyclic_collector(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path, no_collector: None
) -> None:
    app = make_app(tmp_path, twilio)
    refs: dict[str, weakref.ref[Any]] = {}

    @app.default
    async def handler(call: CallSession) -> None:
        parts = {"session": call, "context": call.context, "control": call.control}
        refs.update({name: weakref.ref(part) for name, part in parts.items()})
        await call.send_audio(AudioChunk(b"\x00\x01" * 160, 8000, Codec.PCM16))
        await call.hangup()

    async with running(app, fake_asterisk, twilio) as rig:
        await twilio.call_in(rig.backend.voice_url)
        for _ in range(500):
            if refs and not app.active_sessions and all(r() is None for r in refs.values()):
                break
            await asyncio.sleep(0.01)
    assert set(refs) == {"session", "context", "control"}
    assert [name for name, ref in refs.items() if ref() is not None] == []


async def test_a_busy_twilio_originate_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path, no_collector: None
) -> None:
    app = make_app(tmp_path, twilio)
    twilio.script("+15550777", "busy")

    async def dial() -> str:
        try:
            await rig.backend.originate("+15550777", timeout=5)
        except CallBusy:
            return "busy"
        return "answered"

    async with running(app, fake_asterisk, twilio) as rig:
        assert await asyncio.create_task(dial()) == "busy"
        assert cyclic_garbage((CallBusy,)) == []


async def test_a_refused_twilio_originate_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path, no_collector: None
) -> None:
    # calls.create runs in a task of its own (a cancel must not lose its answer): the
    # task holds the refusal, whose traceback holds the originate's frame.
    app = make_app(tmp_path, twilio)
    twilio.script("+15550778", "refused")

    async def dial() -> str:
        try:
            await rig.backend.originate("+15550778", timeout=5)
        except CallFailed:
            return "failed"
        return "answered"

    async with running(app, fake_asterisk, twilio) as rig:
        assert await asyncio.create_task(dial()) == "failed"
        assert cyclic_garbage((CallFailed, TwilioApiError)) == []
