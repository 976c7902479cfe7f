"""``call.dial`` cancelled while the caller stays on the call (a time limit around it),
against the real Asterisk with SIP phones: whatever the dial was doing (ringing, the
caller talking to the one who answered, a transfer by keys ringing its target), every
phone it rang is hung up, no leg or bridge of the dial is left in Asterisk, and the
caller is back in its media bridge, where the handler's next ``say()`` is heard.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.calls.dial import TransferKeys
from voxtra.testing.local_caller import place_local_call
from voxtra.testing.sipcaller import SipCall, SipCaller

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _dial_leftovers(ari: AriClient, app: VoxtraApp) -> list[str]:
    """The app's dial legs and dial / consultation bridges still in Asterisk."""
    channels: list[Any] = await ari.channels.list()
    bridges: list[Any] = await ari.bridges.list()
    mine = [c.id for c in channels if app.instance_id in c.id and "-leg-" in c.id]
    mine += [b.id for b in bridges if app.instance_id in b.id and "-media-" not in b.id]
    return mine


async def _home_bridge(ari: AriClient, call_id: str) -> str:
    """The id of the bridge the caller is in now ("" if none)."""
    bridges: list[Any] = await ari.bridges.list()
    return next((b.id for b in bridges if call_id in b.channels), "")


@pytest.mark.parametrize("when", ["ringing", "talking", "transfer-ringing"])
async def test_a_dial_cancelled_hangs_up_what_it_rang_and_brings_the_caller_back(
    make_app: MakeApp, ari: AriClient, tmp_path: Path, when: str
) -> None:
    outcome: dict[str, Any] = {}
    cancelled = asyncio.Event()
    release = asyncio.Event()
    async with (
        SipCaller(workdir=tmp_path / "desk") as desk_phone,
        SipCaller(workdir=tmp_path / "third") as third_phone,
    ):
        await desk_phone.listen(answer=when != "ringing", record=False)
        await third_phone.listen(answer=False, record=False)  # rings until hung up
        desk = f"PJSIP/sipcaller/sip:desk@127.0.0.1:{desk_phone.port}"
        keys = TransferKeys(endpoint=f"PJSIP/sipcaller/sip:{{number}}@127.0.0.1:{third_phone.port}")
        desk_calls: list[SipCall] = []

        async def until_cancel_point() -> None:
            desk_calls.append(await desk_phone.next_incoming_call(10))
            if when == "ringing":
                return
            await _until(lambda: any("-dial-" in b for b in app.registry.bridges))
            if when == "transfer-ringing":
                await desk_calls[0].send_dtmf_script("*2123#")
                await third_phone.next_incoming_call(10)

        def configure(app: VoxtraApp) -> None:
            @app.route(extension="7103")
            async def forward(call: CallSession) -> None:
                await call.answer()
                await call.media()  # the caller's media bridge: where it must come back
                outcome["media"] = await _home_bridge(ari, call.id)
                dialing = asyncio.ensure_future(
                    call.dial(desk, timeout=20, transfer_keys=keys if "transfer" in when else None)
                )
                await until_cancel_point()
                dialing.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await dialing
                outcome["home"] = await _home_bridge(ari, call.id)
                cancelled.set()
                await release.wait()

        name = f"voxtra-dialcancel-{uuid.uuid4().hex[:8]}"
        app = await make_app(configure, app_name=name)
        caller = await place_local_call(
            ari, "7103", behaviour="answer", variables={"VOXTRA_APP": name}
        )
        try:
            await asyncio.wait_for(cancelled.wait(), 30)
            # The dial's phones are hung up (a CANCEL or a BYE), not left to the end of
            # the call: the caller is still on it.
            await desk_calls[0].wait_ended(5)
            for third_call in third_phone.calls:
                await third_call.wait_ended(5)
            assert await _dial_leftovers(ari, app) == []
            assert outcome["home"] == outcome["media"] != ""
        finally:
            release.set()
            await caller.hangup()
            await _until(lambda: not app.active_sessions)
