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
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.calls.dial import DialResult
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
