"""``call.dial`` and the handler's audio: once the target hangs up, the caller is back in
the media bridge with the agent's ExternalMedia channel (it used to be left in no bridge,
so the handler's next ``say()`` reached nobody, silently)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_apps import fake_app

from voxtra import CallSession, VoxtraApp
from voxtra.calls.dial import DialResult, TransferKeys
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[[], VoxtraApp]:
    return functools.partial(fake_app, tmp_path, "dial-media-tests")


def _bridge_of(fake: FakeAsterisk, channel_id: str | None) -> set[str]:
    """The ids in the bridge ``channel_id`` is in (empty: in none)."""
    for bridge in fake.bridges.values():
        if channel_id in bridge.channels:
            return set(bridge.channels)
    return set()


@pytest.mark.parametrize("keys", [None, TransferKeys()], ids=["plain", "transfer-keys"])
async def test_the_caller_is_back_in_the_media_bridge_after_the_target_hangs_up(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp], keys: TransferKeys | None
) -> None:
    app = make_app()
    results: list[DialResult] = []
    seen: dict[str, Any] = {}

    @app.route("1000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        transport = await call.media()
        media = call.media_path
        seen["before"] = _bridge_of(fake_asterisk, call.id)
        results.append(await call.dial("PJSIP/agent", timeout=5, transfer_keys=keys))
        seen["after"] = _bridge_of(fake_asterisk, call.id)
        seen["media"] = {call.id, media.channel_id}
        # The same transport: the caller is where the agent's audio goes.
        seen["same transport"] = await call.media() is transport
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await fake_asterisk.wait_until(
            lambda: bool(fake_asterisk.originated) and fake_asterisk.originated[0].in_app
        )
        (agent,) = fake_asterisk.originated
        await fake_asterisk.wait_until(lambda: agent.bridge_id is not None)
        assert _bridge_of(fake_asterisk, caller.id) == {caller.id, agent.id}  # talking
        await agent.hang_up()
        await caller.wait_ended()

    [result] = results
    assert result.outcome == "answered" and result.ended_by == "target"
    assert seen["before"] == seen["media"]
    assert seen["after"] == seen["media"]  # with the agent's media channel again
    assert seen["same transport"]
    assert not fake_asterisk.bridges


async def test_a_caller_without_media_is_in_no_bridge_after_the_dial(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    after: list[set[str]] = []

    @app.route("1000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        await call.dial("PJSIP/agent", timeout=5)
        after.append(_bridge_of(fake_asterisk, call.id))
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await fake_asterisk.wait_until(
            lambda: bool(fake_asterisk.originated) and fake_asterisk.originated[0].bridge_id
        )
        await fake_asterisk.originated[0].hang_up()
        await caller.wait_ended()

    # Nowhere to go back to: the media path attaches (and bridges the caller) on first use.
    assert after == [set()]


@pytest.mark.parametrize("keys", [None, TransferKeys()], ids=["plain", "transfer-keys"])
@pytest.mark.parametrize("when", ["bridge-made", "joining"])
async def test_a_target_hanging_up_while_the_dial_sets_up_ends_the_dial(
    fake_asterisk: FakeAsterisk,
    make_app: Callable[[], VoxtraApp],
    monkeypatch: pytest.MonkeyPatch,
    keys: TransferKeys | None,
    when: str,
) -> None:
    """The target answers and hangs up before the caller is talking to it: while the
    app makes the dial bridge (addChannel then refused: 400 "Channel not found"), or
    while addChannel runs (its events before its answer). Its hang-up used to reach no
    waiter: dial() raised AriBadRequest, or never returned, the caller left alone."""
    app = make_app()
    results: list[DialResult] = []
    seen: dict[str, Any] = {}
    create, add = fake_asterisk._r_bridge_create, fake_asterisk._r_bridge_add

    def hang_up_target() -> None:
        for leg in fake_asterisk.originated:
            if leg.in_app and not leg.ended:
                fake_asterisk.caller_hangs_up(leg)

    def hang_up_on_create(request: Any, bridge: str | None = None) -> Any:
        if "dial" in (bridge or request.params.get("bridgeId", "")):
            hang_up_target()
        return create(request, bridge)

    async def hang_up_while_joining(request: Any, bridge: str) -> Any:
        response = add(request, bridge)
        joined = fake_asterisk.bridges[bridge].channels if bridge in fake_asterisk.bridges else []
        if "dial" in bridge and any(leg.id in joined for leg in fake_asterisk.originated):
            hang_up_target()
            await asyncio.sleep(0.05)  # the events reach the app before the answer
        return response

    @app.route("1000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        await call.media()
        seen["media"] = _bridge_of(fake_asterisk, call.id)
        if when == "bridge-made":
            monkeypatch.setattr(fake_asterisk, "_r_bridge_create", hang_up_on_create)
        else:
            monkeypatch.setattr(fake_asterisk, "_r_bridge_add", hang_up_while_joining)
        dialing = call.dial("PJSIP/agent", timeout=5, transfer_keys=keys)
        results.append(await asyncio.wait_for(dialing, 5))
        seen["after"] = _bridge_of(fake_asterisk, call.id)
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await caller.wait_ended(10)

    [result] = results
    assert (result.outcome, result.ended_by) == ("answered", "target")
    assert result.target == "PJSIP/agent"
    if when == "bridge-made":
        assert result.talk_time == 0.0 and "hung up before it was connected" in result.reason
    assert seen["after"] == seen["media"]  # back where it was, not alone in the dial bridge
    assert fake_asterisk.originated[0].ended
    assert not fake_asterisk.bridges
