"""Answering-machine detection on FakeAsterisk: the dialplan round trip, the verdict,
the framework's refinement and ``wait_for_beep``.

The fake runs the AMD step of the shipped dialplan (``voxtra-amd``): a ``continue``
into it sets ``AMDSTATUS``/``AMDCAUSE`` and brings the channel back to the app.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_apps import fake_app

from voxtra import VoxtraApp
from voxtra.calls.amd import AmdConfig, AmdError, AmdResult, AmdVerdict
from voxtra.calls.session import CallSession
from voxtra.errors import CallFailed
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.g711 import encode
from voxtra.testing import audio
from voxtra.testing.fake_asterisk import FakeAsterisk
from voxtra.testing.fake_asterisk.calls import FakeCall

ENDPOINT = "PJSIP/alice"


def make_app(tmp_path: Path) -> VoxtraApp:
    return fake_app(tmp_path, "amd-tests", handler_deadline=1.0)


def ulaw(samples: np.ndarray) -> bytes:
    pcm = samples.astype("<i2").tobytes()
    return encode(AudioChunk(pcm, 8000, Codec.PCM16), Codec.ULAW).data


def noise(seconds: float, level: float = 0.2) -> np.ndarray:
    """Loud broadband sound: speech for a level meter, never a tone."""
    rng = np.random.default_rng(3)
    return (rng.normal(0, level, int(8000 * seconds)) * 32767).clip(-32767, 32767).astype(np.int16)


async def far_end_says(fake: FakeAsterisk, samples: np.ndarray) -> FakeCall:
    """Once the app listens to the originated call, the far end sends ``samples``."""
    await fake.wait_until(lambda: bool(fake.originated) and bool(fake.originated[0].media_ends))
    call = fake.originated[0]
    call.send_audio(ulaw(samples))
    return call


@pytest.mark.parametrize(
    ("status", "cause", "verdict"),
    [
        ("MACHINE", "MAXWORDS-3-2", AmdVerdict.MACHINE),
        ("HUMAN", "HUMAN-800-800", AmdVerdict.HUMAN),
        ("HANGUP", "", AmdVerdict.UNKNOWN),
    ],
)
async def test_originate_with_amd_runs_the_dialplan_step_and_reports_asterisks_verdict(
    fake_asterisk: FakeAsterisk, tmp_path: Path, status: str, cause: str, verdict: AmdVerdict
) -> None:
    fake_asterisk.amd_outcomes[ENDPOINT] = (status, cause)
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        call = await app.originate(ENDPOINT, amd=AmdConfig(listen=0))
        (channel,) = fake_asterisk.originated
        assert call.amd is not None
        assert (call.amd.verdict, call.amd.status, call.amd.cause) == (verdict, status, cause)
        assert call.amd.reasons == (f"asterisk AMD: {status} ({cause})",)
        assert channel.variables["VOXTRA_AMD_APP"] == "amd-tests"
        assert channel.context == "voxtra-amd" and channel.in_app
        await call.hangup()


async def test_without_amd_the_call_is_not_sent_through_the_dialplan(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        call = await app.originate(ENDPOINT)
        assert call.amd is None
        assert "VOXTRA_AMD_APP" not in fake_asterisk.originated[0].variables
        assert not [p for m, p in fake_asterisk.requests if p.endswith("/continue")]
        await call.hangup()


async def test_not_sure_then_a_beep_is_a_machine(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    fake_asterisk.amd_outcome = ("NOTSURE", "TOOLONG-5000")
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        greeting = np.concatenate(
            [noise(0.6), audio.silence(0.1), audio.tone(1000, 0.4, amplitude=0.3), audio.silence(1)]
        )
        sender = asyncio.ensure_future(far_end_says(fake_asterisk, greeting))
        call = await app.originate(ENDPOINT, amd=AmdConfig(listen=5, long_greeting_ms=3000))
        await sender
        assert call.amd is not None
        assert call.amd.verdict is AmdVerdict.MACHINE
        assert call.amd.beep is not None and abs(call.amd.beep.freq - 1000) <= 25
        assert call.amd.reasons[0] == "asterisk AMD: NOTSURE (TOOLONG-5000)"
        assert call.amd.reasons[1].startswith("beep heard (1000 Hz")
        # the beep is over: wait_for_beep() gives it at once
        assert await call.wait_for_beep(timeout=0.1) is call.amd.beep
        await call.hangup()


async def test_not_sure_then_hello_and_silence_is_a_person(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    fake_asterisk.amd_outcome = ("NOTSURE", "TOOLONG-5000")
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        sender = asyncio.ensure_future(
            far_end_says(fake_asterisk, np.concatenate([noise(0.5), audio.silence(1.5)]))
        )
        call = await app.originate(ENDPOINT, amd=True)
        await sender
        assert call.amd is not None
        assert call.amd.verdict is AmdVerdict.HUMAN, call.amd.reasons
        assert call.amd.greeting_ms is not None and 300 <= call.amd.greeting_ms <= 700
        assert "of silence" in call.amd.reasons[-1]
        await call.hangup()


async def test_not_sure_and_a_long_greeting_is_a_machine(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    fake_asterisk.amd_outcome = ("NOTSURE", "TOOLONG-5000")
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        sender = asyncio.ensure_future(far_end_says(fake_asterisk, noise(2.0)))
        call = await app.originate(ENDPOINT, amd=AmdConfig(long_greeting_ms=1000))
        await sender
        assert call.amd is not None
        assert call.amd.verdict is AmdVerdict.MACHINE
        assert call.amd.reasons[-1].startswith("greeting of 1.0 s")
        await call.hangup()


async def test_wait_for_beep_then_leave_a_message(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    fake_asterisk.amd_outcome = ("HUMAN", "HUMAN-800-800")  # fooled by a short greeting
    results: list[Any] = []
    app = make_app(tmp_path)

    async def drop(call: CallSession) -> None:
        beep = await call.wait_for_beep(timeout=5)
        results.append((beep, call.amd))
        await call.play_and_wait("sound:vm-goodbye")

    async with fake_asterisk.serve(app):
        sender = asyncio.ensure_future(
            far_end_says(
                fake_asterisk,
                np.concatenate(
                    [noise(0.4), audio.silence(0.3), audio.tone(850, 0.5, amplitude=0.3)]
                ),
            )
        )
        call = await app.originate(ENDPOINT, amd=True, handler=drop)
        channel = await sender
        await call.wait_ended(5)
    ((beep, result),) = results
    assert beep is not None and abs(beep.freq - 850) <= 25 and beep.duration_ms >= 400
    assert isinstance(result, AmdResult) and result.verdict is AmdVerdict.MACHINE
    assert result.reasons[0] == "asterisk AMD: HUMAN (HUMAN-800-800)"
    assert result.reasons[-1].startswith("beep heard (850 Hz")
    assert channel.played == ["sound:vm-goodbye"]


async def test_wait_for_beep_gives_none_without_one(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    fake_asterisk.amd_outcome = ("MACHINE", "LONGGREETING-1600-1500")
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        call = await app.originate(ENDPOINT, amd=True)
        transport = await call.media()
        wire = transport.inbound_format
        assert await call.wait_for_beep(timeout=0.5) is None
        assert call.amd is not None and call.amd.verdict is AmdVerdict.MACHINE
        # Its listening done, the call's raw frames are the wire's again (they stayed
        # PCM16 at 8 kHz for whoever read call.media() next).
        assert transport.inbound_format == wire
        await call.hangup()


async def test_an_amd_step_that_never_returns_raises_and_hangs_up(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    fake_asterisk.amd_context = "not-the-amd-context"  # continue leaves it in the dialplan
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        with pytest.raises(AmdError, match="did not bring the call back"):
            await app.originate(ENDPOINT, amd=AmdConfig(timeout=0.3))
        (channel,) = fake_asterisk.originated
        await channel.wait_ended(5)
        assert not app.active_sessions


async def test_a_person_hanging_up_during_the_amd_step_raises_call_failed(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Asterisk: a hang-up ends the dialplan inside AMD(), the Stasis line after it
    never runs and the call never comes back; the originate's outcome is raised, as the
    sandbox test measured (CallFailed, cause 16). (The HANGUP case above is a call the
    fake brings back, as a dialplan that goes on after a hang-up would.)"""

    def person_hangs_up(call: FakeCall) -> None:
        call.variables.update(AMDSTATUS="HANGUP", AMDCAUSE="")
        fake_asterisk._later(0.05, lambda: fake_asterisk.caller_hangs_up(call))

    monkeypatch.setattr(fake_asterisk, "_run_amd", person_hangs_up)
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        with pytest.raises(CallFailed) as raised:
            await app.originate(ENDPOINT, amd=AmdConfig(listen=0, timeout=5))
        assert raised.value.cause == 16
        assert "answered, then hung up during answering-machine detection" in str(raised.value)
        (channel,) = fake_asterisk.originated
        assert channel.ended
        assert not app.active_sessions


def test_amd_arguments_for_the_dialplan() -> None:
    assert AmdConfig().dialplan_args() == ""
    assert AmdConfig(initial_silence_ms=2000, max_words=3).dialplan_args() == "2000,,,,,,3"
    assert AmdConfig().variables("app") == {"VOXTRA_AMD_APP": "app", "VOXTRA_AMD_ARGS": ""}
    with pytest.raises(AmdError):
        AmdConfig(greeting_ms=-1).dialplan_args()


def load_example(name: str) -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("status", "left"), [("MACHINE", "after the beep"), ("HUMAN", "live")])
async def test_the_voicemail_drop_example(
    fake_asterisk: FakeAsterisk, tmp_path: Path, status: str, left: str
) -> None:
    example = load_example("voicemail_drop")
    fake_asterisk.amd_outcome = (status, "")
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        beep = np.concatenate([audio.silence(0.2), audio.tone(1000, 0.4, amplitude=0.3)])
        sender = asyncio.ensure_future(far_end_says(fake_asterisk, beep))
        call = await app.originate(ENDPOINT, amd=True, handler=example.drop)
        await call.wait_ended(5)
        if status == "MACHINE":
            await sender
        else:
            sender.cancel()  # a person: the handler never listens
    assert call.metadata["left"] == left
    assert fake_asterisk.originated[0].played == example.MESSAGE


async def test_an_originate_cancelled_while_the_framework_listens_hangs_the_call_up(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """Asterisk's AMD was not sure and the framework listens for the verdict when the
    originate is given up (a time limit around it, a stopping worker): the call is hung
    up, as one given up while it rings. It used to stay answered, held by nobody the
    originate's caller knew of (without a handler: until the far end hung up)."""
    fake_asterisk.amd_outcome = ("NOTSURE", "TOOLONG-5000")
    app = make_app(tmp_path)
    async with fake_asterisk.serve(app):
        # The far end says nothing: the framework listens its whole 5 s.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(app.originate(ENDPOINT, amd=AmdConfig(listen=5)), 1.0)
        (channel,) = fake_asterisk.originated
        await fake_asterisk.wait_until(lambda: channel.ended, timeout=3)
        await fake_asterisk.wait_until(lambda: not app.active_sessions, timeout=3)
