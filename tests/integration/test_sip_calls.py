"""Call control with real SIP callers: a DTMF menu (the shipped example) and a bridge
whose audio is proved by what each caller heard."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.testing import audio
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_ivr_menu_example_routes_a_dtmf_choice_to_the_queue(tmp_path: Path) -> None:
    example = _load_example("ivr_menu")
    app: VoxtraApp = example.app
    choices: list[tuple[str, str]] = []
    await app.start()
    try:
        async with SipCaller(workdir=tmp_path / "phone") as phone:
            call = await phone.dial("1000", record=tmp_path / "heard.wav")
            await call.wait_answered(10)
            await asyncio.sleep(2.5)  # the greeting, then the menu starts
            await call.send_dtmf("1")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                choices = [(s.called_number, s.state) for s in app.active_sessions.values()]
                if any(number == "queue-agent" for number, _ in choices):
                    break
                await asyncio.sleep(0.1)
            await call.hangup()
            await call.wait_ended(10)
    finally:
        await app.stop()
    assert any(number == "queue-agent" for number, _ in choices), choices
    heard, rate = audio.read_wav(tmp_path / "heard.wav")
    assert audio.active_segments(heard, rate), "the caller heard the prompts"


async def test_bridged_sip_callers_hear_each_other(make_app: MakeApp, tmp_path: Path) -> None:
    waiting: asyncio.Queue[CallSession] = asyncio.Queue()
    bridged = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="1001")
        async def first(call: CallSession) -> None:
            await call.answer()
            waiting.put_nowait(call)
            await bridged.wait()

        @app.route(extension="1002")
        async def second(call: CallSession) -> None:
            await call.answer()
            await call.bridge_with(await waiting.get())
            bridged.set()

    await make_app(configure)
    tone_a = audio.write_wav(tmp_path / "a.wav", audio.tone(440, 2.0, amplitude=0.4), 8000)
    tone_b = audio.write_wav(tmp_path / "b.wav", audio.tone(1000, 2.0, amplitude=0.4), 8000)
    async with (
        SipCaller(workdir=tmp_path / "a") as phone_a,
        SipCaller(workdir=tmp_path / "b") as phone_b,
    ):
        call_a = await phone_a.dial("1001", record=tmp_path / "heard_a.wav")
        await call_a.wait_answered(10)
        call_b = await phone_b.dial("1002", record=tmp_path / "heard_b.wav")
        await call_b.wait_answered(10)
        await asyncio.wait_for(bridged.wait(), 10)
        await asyncio.sleep(0.3)
        await call_a.play(tone_a)
        await call_b.play(tone_b)
        await call_a.wait_play_done(10)
        await call_b.wait_play_done(10)
        await asyncio.sleep(0.3)
        await call_a.hangup()
        await call_a.wait_ended(10)
        await call_b.wait_ended(10)  # the app hangs up the party left alone

    for heard, expected in (("heard_a.wav", 1000), ("heard_b.wav", 440)):
        samples, rate = audio.read_wav(tmp_path / heard)
        segments = audio.active_segments(samples, rate)
        assert segments, f"{heard}: silence"
        start, end = max(segments, key=lambda seg: seg[1] - seg[0])
        assert end - start == pytest.approx(2.0, abs=0.1)
        body = samples[round((start + 0.1) * rate) : round((end - 0.1) * rate)]
        assert audio.dominant_frequency(body, rate) == pytest.approx(expected, rel=0.02)
