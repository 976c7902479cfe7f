"""``reconcile_policy="adopt"``: a restarted process routes the calls its killed
predecessor left in the app as they were routed first, on the real Asterisk.

The call enters with ``Stasis(app,1000)`` from a dialplan at another extension
(``answer``): its StasisStart said extension 1000 (the first argument). An adopted
call has no StasisStart, only the channel listing; it was routed without its
arguments, by the dialplan extension (``answer``), to the default handler with
``call.args == ()``; an app with routes only hung it up as unrouted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from test_lifecycle import MakeApp, Peer, app_name, call_into, exists

from voxtra import CallSession
from voxtra.app import INSTANCE_VARIABLE, VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriNotFound

pytestmark = pytest.mark.asterisk


async def test_an_adopted_call_is_routed_with_its_stasis_arguments(
    make_app: MakeApp, ari: AriClient, asterisk: Any
) -> None:
    name = app_name("adopt")
    peer = await Peer.start(asterisk, name)
    call_id = ""
    try:
        call_id, _ = await call_into(ari, name)
        await peer.wait_for(lambda line: line.get("id") == call_id, 15)
        dead_id = peer.lines[0]["instance"]
        tag = None  # written a round trip after the handler's line (see test_instance_restart)
        for _ in range(100):
            with contextlib.suppress(AriNotFound):
                tag = await ari.channels.get_variable(call_id, INSTANCE_VARIABLE)
            if tag == dead_id:
                break
            await asyncio.sleep(0.05)
        assert tag == dead_id
        assert (await ari.channels.get(call_id)).dialplan.exten == "answer"
        peer.kill()  # SIGKILL: the call stays parked in the app
        await asyncio.wait_for(peer.proc.wait(), 10)

        routed: asyncio.Queue[tuple[str, tuple[str, ...], str]] = asyncio.Queue()

        def configure(app: VoxtraApp) -> None:
            app.reconcile_grace = 0.5

            @app.route("1000")
            async def desk(call: CallSession) -> None:
                routed.put_nowait(("desk", call.args, call.called_number))
                await call.wait_ended()

            @app.default
            async def other(call: CallSession) -> None:
                routed.put_nowait(("default", call.args, call.called_number))
                await call.wait_ended()

        restarted = await make_app(configure, app_name=name, reconcile_policy="adopt")
        assert restarted.instance_id == dead_id
        assert await asyncio.wait_for(routed.get(), 15) == ("desk", ("1000",), "1000")
        assert await exists(ari, call_id)
    finally:
        peer.kill()
        if call_id:
            with contextlib.suppress(AriNotFound):
                await ari.channels.hangup(call_id)
