"""The app's event filter and untied instance tag against the real Asterisk.

Asterisk takes the filter the app sets on connect (``ignored_events``: it lists it on
the app), and waiting for such a kind is refused; an inbound call is still tagged with
the instance id (what reconcile reads), now sent beside the handler, not before it; and
with ``instance_tag_in_dialplan`` the dialplan tags it, with no request at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import INSTANCE_VARIABLE, VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.events import ChannelVarset
from voxtra.ari.transport import AriRequest, AriResponse
from voxtra.errors import ConfigError
from voxtra.testing.local_caller import place_local_call
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


async def test_ignored_kinds_are_filtered_by_asterisk_and_calls_still_tagged(
    make_app: MakeApp, ari: AriClient
) -> None:
    name = f"voxtra-cp-{uuid.uuid4().hex[:6]}"
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        try:
            await call.wait_for_event(ChannelVarset, timeout=2)
        except ConfigError as exc:
            seen["refused"] = str(exc)
        seen["tag"] = await call.get_variable(INSTANCE_VARIABLE)
        done.set()
        await call.hangup()

    app = await make_app(app_name=name, configure=lambda a: a.default(handler))
    info = await ari.applications.get(name)
    assert {e["type"] for e in info.events_disallowed or ()} == {"ChannelVarset", "ChannelDialplan"}

    await place_local_call(ari, "1234", variables={"VOXTRA_APP": name})
    await asyncio.wait_for(done.wait(), 10)
    assert "ignored_events" in seen["refused"]
    assert seen["tag"] == app.instance_id  # tagged beside the handler, before its answer


async def test_a_call_tagged_by_the_dialplan_costs_no_tag_request(
    make_app: MakeApp, ari: AriClient, asterisk: AsteriskTarget
) -> None:
    # instance_tag_in_dialplan: the app sets VOXTRA_INSTANCE_<app> and the dialplan line
    # of docs/calls.md copies it onto the call. The line is added to a context of its
    # own at run time (`dialplan add extension`, removed after): editing asterisk-conf/
    # would make the next session's sandbox run `core reload`.
    if asterisk.sandbox is None:
        pytest.skip("adds a dialplan context through the sandbox's CLI")
    sandbox = asterisk.sandbox
    name = f"voxtra-cp-{uuid.uuid4().hex[:6]}"
    context = f"voxtra-tag-{uuid.uuid4().hex[:6]}"
    sandbox.add_tagging_context(context)
    tags: list[str] = []
    seen: dict[str, str] = {}
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        seen["tag"] = await call.get_variable(INSTANCE_VARIABLE)
        done.set()
        await call.hangup()

    def configure(app: VoxtraApp) -> None:
        app.instance_tag_in_dialplan = True
        app.default(handler)
        sent = app.ari.transport.handle_request

        async def spy(request: AriRequest) -> AriResponse:
            path = request.path
            if request.method == "POST" and path.startswith("/channels/") and "/variable" in path:
                tags.append(path)
            return await sent(request)

        app.ari.transport.handle_request = spy  # type: ignore[method-assign]

    try:
        app = await make_app(app_name=name, configure=configure)
        assert await ari.asterisk.get_variable(f"VOXTRA_INSTANCE_{name}") == app.instance_id
        await place_local_call(ari, "1234", variables={"VOXTRA_APP": name}, context=context)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        sandbox.cli(f"dialplan remove context {context}")
    assert seen["tag"] == app.instance_id  # the dialplan's, at once
    assert tags == []
