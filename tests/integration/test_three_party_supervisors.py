"""Supervisors on three-party calls once the AI agent has left, with real SIP phones.

Three pjsua2 phones: the caller (440 Hz) is the app's call, the callee (880 Hz) is the
person the AI connects it with (``connect()``, then ``close()``), and the supervisor
(1,300 Hz) coaches "the agent". Each phone records what it heard; levels as in
``test_three_party.py`` (a tone heard at about -21 dBFS, one not heard below -65).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_three_party import CALLEE_HZ, CALLER_HZ, HEARD, NOT_HEARD, WINDOW, level

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.calls.parties import PartyState
from voxtra.testing import audio
from voxtra.testing.pytest_plugin import AsteriskTarget
from voxtra.testing.sipcaller import SipCall, SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

BOSS_HZ = 1300


def heard(phone: SipCall, window: tuple[float, float]) -> dict[int, float]:
    """Each tone's level in what ``phone`` heard during ``window`` (0.3 s after its
    start for the requests and the jitter buffer, 0.1 s before its end)."""
    assert phone.recording_path is not None
    samples, rate = audio.read_wav(phone.recording_path)
    start, end = window
    a = round((phone.recording_offset(start) + 0.3) * rate)
    b = round((phone.recording_offset(end) - 0.1) * rate)
    return {f: level(samples[a:b], rate, f) for f in (CALLER_HZ, CALLEE_HZ, BOSS_HZ)}


@pytest.fixture
async def phones(asterisk: AsteriskTarget, tmp_path: Path) -> AsyncIterator[list[SipCaller]]:
    """The caller's, the callee's and the supervisor's phones, each playing its tone."""
    async with (
        SipCaller(workdir=tmp_path / "caller") as caller,
        SipCaller(workdir=tmp_path / "callee") as callee,
        SipCaller(workdir=tmp_path / "boss") as boss,
    ):
        for phone, hz in ((caller, CALLER_HZ), (callee, CALLEE_HZ), (boss, BOSS_HZ)):
            tone = audio.write_wav(tmp_path / f"{hz}.wav", audio.tone(hz, 20, amplitude=0.3), 8000)
            await phone.listen(play=tone, record=True)
        yield [caller, callee, boss]


async def test_a_supervisor_coaches_the_person_the_ai_put_through_after_it_left(
    asterisk: AsteriskTarget, phones: list[SipCaller]
) -> None:
    """A supervisor whispering to the AI agent is seated on the callee when the AI
    leaves (``close()``), and one who joins after it left whispers to the callee.
    The first heard nothing once the AI left (its snoop went with the AI's media
    channel); the second was refused: PartyError "no agent listens on this call"."""
    caller_phone, callee_phone, boss_phone = phones
    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        f"voxtra-3p-boss-{uuid.uuid4().hex[:8]}",
        environ={},
        handler_deadline=2.0,
    )
    boss_endpoint = f"PJSIP/sipcaller/sip:boss@127.0.0.1:{boss_phone.port}"
    windows: dict[str, tuple[float, float]] = {}
    made: list[str] = []
    raised: list[BaseException] = []
    done = asyncio.Event()

    async def window(name: str) -> None:
        start = time.time()
        await asyncio.sleep(WINDOW)
        windows[name] = (start, time.time())

    async def handler(call: CallSession) -> None:
        try:
            await call.media()
            supervision = await app.supervise(
                call.id, boss_endpoint, "whisper", to="agent", ring_time=10
            )
            assert supervision.target == call.media_path.channel_id  # coaching the AI
            await call.connect(
                ring_time=10, to=f"PJSIP/sipcaller/sip:callee@127.0.0.1:{callee_phone.port}"
            )
            await call.close()
            await window("followed")
            await supervision.end()
            supervision = await app.supervise(
                call.id, boss_endpoint, "whisper", to="agent", ring_time=10
            )
            await window("joined")
            made.extend([str(supervision.bridge_id), str(supervision.snoop_id)])
            await supervision.end()
        except Exception as exc:
            raised.append(exc)
        finally:
            done.set()

    await app.start()
    try:
        session = await app.originate(
            f"PJSIP/sipcaller/sip:caller@127.0.0.1:{caller_phone.port}",
            handler=handler,
            timeout=10,
        )
        caller = await caller_phone.next_incoming_call(10)
        boss = await boss_phone.next_incoming_call(10)
        callee = await callee_phone.next_incoming_call(10)
        await asyncio.wait_for(done.wait(), 30)
        assert not raised and session.parties.state is PartyState.CLOSED, raised
        await boss.wait_ended(10)
        second_boss = await boss_phone.next_incoming_call(10)
        await second_boss.wait_ended(10)
        await callee.hangup()
        await callee.wait_ended(10)
        await caller.wait_ended(10)
        await session.wait_ended(10)
        # Nothing of the supervisions is left in Asterisk.
        assert not {c.id for c in await app.ari.channels.list()} & set(made)
        assert not {b.id for b in await app.ari.bridges.list()} & set(made)
    finally:
        await app.stop()

    for name, boss_call in (("followed", boss), ("joined", second_boss)):
        at_caller, at_callee = heard(caller, windows[name]), heard(callee, windows[name])
        at_boss = heard(boss_call, windows[name])
        detail = f"{name}: caller {at_caller}, callee {at_callee}, supervisor {at_boss}"
        # the supervisor hears both; only the callee (the agent now) hears it
        assert at_boss[CALLER_HZ] > HEARD and at_boss[CALLEE_HZ] > HEARD, detail
        assert at_callee[BOSS_HZ] > HEARD and at_caller[BOSS_HZ] < NOT_HEARD, detail
        assert at_caller[CALLEE_HZ] > HEARD and at_callee[CALLER_HZ] > HEARD, detail
