"""``call.dial`` and the handler's audio: once the target hangs up, the caller is back in
the media bridge with the agent's ExternalMedia channel (it used to be left in no bridge,
so the handler's next ``say()`` reached nobody, silently)."""

from __future__ import annotations

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
