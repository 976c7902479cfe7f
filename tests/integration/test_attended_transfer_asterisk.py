"""DTMF transfer feature codes in the bridges an ARI app makes: measured, not applied.

Asterisk 22 applies features.conf's DTMF features (``blindxfer``, ``atxfer``, enabled
per channel with ``BRIDGE_FEATURES`` or Dial's ``t``/``T``) only in *basic* bridges
(the bridges ``Dial()`` makes). A bridge made over ARI is a Stasis bridge, whose push
goes to the base bridge class, not to the basic bridge's personality that installs the
feature hooks (res/stasis/stasis_bridge.c). Measured on 22.10.1 with three pjsua2
phones (docs/three-party.md, "Attended transfer by DTMF"): in a ``call.dial()`` bridge,
a ``connect()`` + ``close()`` bridge and a ``mixing,dtmf_events`` bridge, with
``BRIDGE_FEATURES=Tt`` and ``TRANSFER_CONTEXT`` on both legs and ``atxfer``/
``blindxfer`` in ``[featuremap]``, the codes went through to the other party as plain
digits (``ChannelDtmfReceived`` on the dtmf_events bridge), the target never rang and
no ``BridgeAttendedTransfer``/``BridgeBlindTransfer`` came. The same features.conf
in a dialplan ``Dial(...,Tt)`` did transfer (``BridgeAttendedTransfer`` result
``Success``).

This test keeps that claim true on the sandbox's own configuration (no featuremap:
Asterisk's default blind-transfer code ``#`` is on): the caller, allowed to transfer
(``BRIDGE_FEATURES=T``), presses ``#600`` in a ``call.dial()`` bridge; the digits reach
the callee's phone, nothing is transferred, and the two stay bridged. If a future
Asterisk applies feature codes in ARI bridges, this fails: revisit the docs then.

What Voxtra offers instead, ``call.dial(..., transfer_keys=...)`` (the app reads the
answering person's keys and runs the attended transfer with legs of its own), is
proven here with three phones: the desk presses ``*2`` + the third phone's number +
``#``, talks to it while the caller is on music on hold, hangs up, and the caller
hears the third phone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.calls.dial import DialResult, TransferKeys
from voxtra.testing import audio
from voxtra.testing.pytest_plugin import AsteriskTarget
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_feature_codes_pass_through_an_app_bridge(
    asterisk: AsteriskTarget, ari: AriClient, tmp_path: Path
) -> None:
    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        f"voxtra-xfer-{uuid.uuid4().hex[:8]}",
        environ={},
        handler_deadline=2.0,
    )
    await app.start()
    tone = audio.write_wav(tmp_path / "tone.wav", audio.tone(440, 20, amplitude=0.3), 8000)
    results: list[DialResult] = []
    try:
        async with (
            SipCaller(workdir=tmp_path / "caller") as caller_phone,
            SipCaller(workdir=tmp_path / "callee") as callee_phone,
        ):
            await caller_phone.listen(play=tone, record=False)
            await callee_phone.listen(play=tone, record=False)
            callee = f"PJSIP/sipcaller/sip:callee@127.0.0.1:{callee_phone.port}"

            async def handler(call: CallSession) -> None:
                # What Dial(...,T) would give the caller, and where a transfer would
                # dial: 600 in from-sip is the sandbox's echo test.
                await call.set_variable("BRIDGE_FEATURES", "T")
                await call.set_variable("TRANSFER_CONTEXT", "from-sip")
                results.append(await call.dial(callee, timeout=10))

            session = await app.originate(
                f"PJSIP/sipcaller/sip:caller@127.0.0.1:{caller_phone.port}",
                handler=handler,
                timeout=10,
            )
            caller = await caller_phone.next_incoming_call(10)
            callee_call = await callee_phone.next_incoming_call(15)
            await callee_call.wait_answered(10)
            await _until(lambda: any("-dial-" in b for b in app.registry.bridges), 10)

            await caller.send_dtmf_script("#600")
            # A feature code is consumed by Asterisk; here it reaches the other party.
            await callee_call.wait_dtmf("#600", timeout=10)
            await asyncio.sleep(2.0)  # a blind transfer would have moved the callee by now

            [bridge_id] = [b for b in app.registry.bridges if "-dial-" in b]
            bridge = await app.ari.bridges.get(bridge_id)
            leg = next(c for c in bridge.channels if c != session.id)
            assert sorted(bridge.channels) == sorted([session.id, leg])
            ours = {session.id, leg}
            # Nothing was dialled for a transfer: no Local/600@from-sip, no new leg.
            channels = await ari.channels.list()
            assert not [c.name for c in channels if "600@" in c.name]
            assert not [c.id for c in channels if app.instance_id in c.id and c.id not in ours]
            assert not caller.ended and not callee_call.ended

            await caller.hangup()
            await callee_call.wait_ended(10)
            await session.wait_ended(10)
            await _until(lambda: not app.active_sessions, 10)
    finally:
        await app.stop()
    [result] = results
    assert (result.outcome, result.ended_by) == ("answered", "caller")
    left = {c.id for c in await ari.channels.list()} & ours
    assert left == set()
    assert bridge_id not in {b.id for b in await ari.bridges.list()}


async def _until_async(
    get: Callable[[], Awaitable[list[str]]], count: int, timeout: float = 10.0
) -> None:
    """Until ``get()`` gives ``count`` items (a bridge's members, asked of ARI)."""
    deadline = time.monotonic() + timeout
    while len(await get()) != count:
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _level(samples: np.ndarray, rate: int, freq: float) -> float:
    """The level (dBFS) of the tone at ``freq``: the spectrum within 25 Hz of it."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) / x.size
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = (freqs > freq - 25) & (freqs < freq + 25)
    energy = float(np.sqrt(np.sum(spectrum[band] ** 2)))
    return 20 * float(np.log10(max(energy, 1e-12) / 32768))


async def test_the_desk_transfers_the_caller_by_its_keys(
    asterisk: AsteriskTarget, ari: AriClient, tmp_path: Path
) -> None:
    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        f"voxtra-xfer-{uuid.uuid4().hex[:8]}",
        environ={},
        handler_deadline=2.0,
    )
    await app.start()
    caller_tone = audio.write_wav(tmp_path / "c.wav", audio.tone(440, 30, amplitude=0.3), 8000)
    desk_tone = audio.write_wav(tmp_path / "d.wav", audio.tone(880, 30, amplitude=0.3), 8000)
    third_tone = audio.write_wav(tmp_path / "t.wav", audio.tone(1300, 30, amplitude=0.3), 8000)
    results: list[DialResult] = []
    try:
        async with (
            SipCaller(workdir=tmp_path / "caller") as caller_phone,
            SipCaller(workdir=tmp_path / "desk") as desk_phone,
            SipCaller(workdir=tmp_path / "third") as third_phone,
        ):
            await caller_phone.listen(play=caller_tone, record=True)
            await desk_phone.listen(play=desk_tone, record=False)
            await third_phone.listen(play=third_tone, record=True)
            desk = f"PJSIP/sipcaller/sip:desk@127.0.0.1:{desk_phone.port}"
            # The "number" the desk keys in is the third phone's SIP port.
            keys = TransferKeys(endpoint="PJSIP/sipcaller/sip:third@127.0.0.1:{number}")

            async def handler(call: CallSession) -> None:
                results.append(await call.dial(desk, timeout=10, transfer_keys=keys))

            session = await app.originate(
                f"PJSIP/sipcaller/sip:caller@127.0.0.1:{caller_phone.port}",
                handler=handler,
                timeout=10,
            )
            caller = await caller_phone.next_incoming_call(10)
            desk_call = await desk_phone.next_incoming_call(15)
            await desk_call.wait_answered(10)
            await _until(lambda: any("-dial-" in b for b in app.registry.bridges), 10)
            [dial_bridge] = [b for b in app.registry.bridges if "-dial-" in b]

            async def members(bridge_id: str) -> list[str]:
                return sorted((await ari.bridges.get(bridge_id)).channels)

            await _until_async(lambda: members(dial_bridge), 2)
            [desk_leg] = [c for c in await members(dial_bridge) if c != session.id]

            await desk_call.send_dtmf_script(f"*2{third_phone.port}#")
            third = await third_phone.next_incoming_call(15)
            await third.wait_answered(10)
            # Consulting: the caller alone in its bridge (music on hold), the desk with
            # the third phone in a bridge of their own.
            await _until(lambda: any("-consult-" in b for b in app.registry.bridges), 10)
            [consult] = [b for b in app.registry.bridges if "-consult-" in b]
            await _until(lambda: len(app.registry.bridges) == 2, 10)
            await _until_async(lambda: members(consult), 2)
            assert await members(dial_bridge) == [session.id]
            [third_leg] = [c for c in await members(consult) if c != desk_leg]
            assert await members(consult) == sorted([desk_leg, third_leg])
            assert third_leg in session.context.channels  # a leg the call owns

            # The desk's keys were absorbed: the caller's phone was sent none of them.
            assert caller.dtmf_received == ""
            await desk_call.hangup()  # completes the transfer
            deadline = time.monotonic() + 10
            while await members(consult) != sorted([session.id, third_leg]):
                assert time.monotonic() < deadline, "the caller never joined the target"
                await asyncio.sleep(0.05)
            joined = time.time()
            await _until(lambda: list(app.registry.bridges) == [consult], 10)
            await asyncio.sleep(2.0)  # the two talk
            talked = time.time()

            await third.hangup()  # the dial ends; the handler returns and the call ends
            await caller.wait_ended(10)
            await session.wait_ended(10)
            await _until(lambda: not app.active_sessions, 10)
    finally:
        await app.stop()
    [result] = results
    assert (result.outcome, result.ended_by) == ("answered", "target")
    assert result.transferred_to == (keys.endpoint.replace("{number}", str(third_phone.port)),)
    left = {c.id for c in await ari.channels.list()} & {session.id, third_leg}
    assert left == set()
    assert {dial_bridge, consult} & {b.id for b in await ari.bridges.list()} == set()
    # After the transfer the caller heard the third phone, and the third phone the caller.
    for phone, tone in ((caller, 1300), (third, 440)):
        assert phone.recording_path is not None
        samples, rate = audio.read_wav(phone.recording_path)
        a = round((phone.recording_offset(joined) + 0.3) * rate)
        b = round((phone.recording_offset(talked) - 0.1) * rate)
        assert _level(samples[a:b], rate, tone) > -35.0, f"{tone} Hz not heard"
