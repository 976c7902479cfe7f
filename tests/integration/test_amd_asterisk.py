"""Answering-machine detection against the real Asterisk (app_amd) with Local channels.

The sandbox's ``voxtra-test`` context has two far ends (``asterisk-conf/extensions.conf``):
``voicemail`` (a 2.8 s greeting, a 700 Hz beep, then silence while it "records") and
``person`` ("hello?" after a breath, then silence while waiting for an answer). An
``originate(..., amd=True)`` to each must tell them apart; on the voicemail box the
handler hears the beep and leaves its message after it. A few seconds each.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.calls.amd import AmdConfig, AmdVerdict
from voxtra.errors import CallFailed

pytestmark = [pytest.mark.asterisk]

MakeApp = Callable[..., Awaitable[VoxtraApp]]


async def test_amd_tells_a_voicemail_box_and_drops_the_message_after_the_beep(
    make_app: MakeApp,
) -> None:
    app = await make_app(app_name=f"voxtra-amd-vm-{uuid.uuid4().hex[:8]}")
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    async def drop(call: CallSession) -> None:
        try:
            seen["verdict_at_start"] = call.amd
            beep = await call.wait_for_beep(timeout=10)
            seen["beep"] = beep
            seen["beep_at"] = time.monotonic() - started
            await call.play_and_wait("sound:vm-goodbye", timeout=10)  # the "message"
        finally:
            done.set()

    started = time.monotonic()
    call = await app.originate("Local/voicemail@voxtra-test", amd=True, handler=drop)
    answered_s = time.monotonic() - started
    await asyncio.wait_for(done.wait(), 20)
    result = seen["verdict_at_start"]
    print(
        f"voicemail: AMD {result.status} {result.cause} after {answered_s:.2f} s; "
        f"beep {seen['beep']} at {seen['beep_at']:.2f} s; final {call.amd}"
    )
    assert result.verdict is AmdVerdict.MACHINE, result
    assert result.status == "MACHINE"
    beep = seen["beep"]
    assert beep is not None and abs(beep.freq - 700) <= 25, beep
    assert 250 <= beep.duration_ms <= 600
    assert call.amd is not None and call.amd.beep is beep
    assert call.amd.reasons[-1].startswith("beep heard (700 Hz")


async def test_amd_tells_a_person_saying_hello(make_app: MakeApp) -> None:
    app = await make_app(app_name=f"voxtra-amd-person-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    call = await app.originate("Local/person@voxtra-test", amd=True)
    answered_s = time.monotonic() - started
    try:
        assert call.amd is not None
        print(f"person: AMD {call.amd.status} {call.amd.cause} after {answered_s:.2f} s")
        assert call.amd.verdict is AmdVerdict.HUMAN, call.amd
        assert call.amd.status == "HUMAN"
        assert call.amd.cause.startswith("HUMAN-")
    finally:
        await call.hangup()


async def test_a_far_end_hanging_up_during_amd_raises_its_outcome(make_app: MakeApp) -> None:
    # The app stays subscribed to the channel while the dialplan runs AMD(): the hang-up
    # reaches it (measured: CallFailed, cause 16, 1.0 s after the originate).
    app = await make_app(app_name=f"voxtra-amd-gone-{uuid.uuid4().hex[:8]}")
    with pytest.raises(CallFailed):
        await app.originate(
            "Local/hangup-after@voxtra-test", amd=True, variables={"WAIT": "0.5"}, timeout=10
        )
    assert not app.active_sessions


@pytest.mark.parametrize(
    ("extension", "verdict", "reason"),
    [
        ("voicemail", AmdVerdict.MACHINE, "beep heard (700 Hz"),
        ("person", AmdVerdict.HUMAN, "s of silence"),
    ],
)
async def test_when_amd_is_not_sure_the_framework_listens(
    make_app: MakeApp, extension: str, verdict: AmdVerdict, reason: str
) -> None:
    # AMD given 1 s (and room for a long greeting) runs out of time: NOTSURE. Measured:
    # the voicemail box then became MACHINE on its beep 3.8 s after the originate, the
    # person HUMAN on 0.6 s of speech then 0.8 s of silence, 2.4 s after it.
    app = await make_app(app_name=f"voxtra-amd-unsure-{uuid.uuid4().hex[:8]}")
    config = AmdConfig(total_analysis_ms=1000, max_words=10, greeting_ms=4000)
    call = await app.originate(f"Local/{extension}@voxtra-test", amd=config)
    try:
        assert call.amd is not None
        assert call.amd.status == "NOTSURE", call.amd
        assert call.amd.verdict is verdict, call.amd
        assert reason in call.amd.reasons[-1]
    finally:
        await call.hangup()
