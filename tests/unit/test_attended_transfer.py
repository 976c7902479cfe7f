"""``call.dial(..., transfer_keys=...)`` on FakeAsterisk: the person who answered
transfers the caller with its keys (``*2`` number ``#``), an attended transfer the app
runs, since Asterisk applies no feature codes in ARI bridges (docs/three-party.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apps import fake_app

from voxtra import CallSession, VoxtraApp
from voxtra.calls.dial import DialResult, TransferKeys
from voxtra.errors import ConfigError
from voxtra.testing import FakeAsterisk
from voxtra.testing.fake_asterisk.calls import FakeCall

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


Forwarding = Callable[..., tuple[VoxtraApp, list[DialResult]]]


@pytest.fixture
def forwarding(tmp_path: Path) -> Forwarding:
    """``forwarding(keys=True)``: an app whose extension 1000 answers and dials
    ``PJSIP/desk`` with ``transfer_keys=keys``, and the DialResults its calls returned."""

    def make(keys: TransferKeys | bool = True) -> tuple[VoxtraApp, list[DialResult]]:
        app = fake_app(tmp_path, "xfer-tests")
        results: list[DialResult] = []

        @app.route("1000")
        async def forward(call: CallSession) -> None:
            await call.answer()
            results.append(await call.dial("PJSIP/desk", transfer_keys=keys))

        return app, results

    return make


def _live_bridges(fake: FakeAsterisk) -> list[list[str]]:
    return [b.channels for b in fake.bridges.values() if not b.destroyed]


async def test_keys_then_hang_up_connect_the_caller_with_the_target(
    fake_asterisk: FakeAsterisk, forwarding: Forwarding
) -> None:
    app, results = forwarding()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 1)
        [desk] = fake_asterisk.originated
        await fake_asterisk.wait_until(lambda: desk.bridge_id is not None)
        await desk.press("*2300#")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 2)
        target = fake_asterisk.originated[1]
        assert target.endpoint == "PJSIP/300"
        # Consulting: the desk with the target, the caller alone on music on hold.
        await fake_asterisk.wait_until(
            lambda: target.bridge_id is not None and target.bridge_id == desk.bridge_id
        )
        assert caller.bridge_id is not None and caller.bridge_id != desk.bridge_id
        assert fake_asterisk.bridges[caller.bridge_id].moh is not None

        await desk.hang_up()  # completes the transfer
        await fake_asterisk.wait_until(lambda: caller.bridge_id == target.bridge_id)
        assert _live_bridges(fake_asterisk) == [[target.id, caller.id]]
        assert list(app.registry.bridges) == [caller.bridge_id]

        await target.hang_up()  # the caller is back with the handler, which returns
        await caller.wait_ended()
    [result] = results
    assert (result.outcome, result.ended_by, result.transferred_to) == (
        "answered",
        "target",
        ("PJSIP/300",),
    )
    assert [c.id for c in fake_asterisk.originated if not c.ended] == []
    assert _live_bridges(fake_asterisk) == []


async def test_a_busy_target_brings_the_desk_back_to_the_caller(
    fake_asterisk: FakeAsterisk, forwarding: Forwarding
) -> None:
    app, results = forwarding(TransferKeys(endpoint="PJSIP/{number}", ring_time=5))
    fake_asterisk.endpoint_outcomes["PJSIP/301"] = "busy"

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 1)
        [desk] = fake_asterisk.originated
        await fake_asterisk.wait_until(lambda: desk.bridge_id is not None)
        bridge = desk.bridge_id
        await desk.press("*2301#")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 2)
        await fake_asterisk.originated[1].wait_ended()
        await fake_asterisk.wait_until(
            lambda: desk.bridge_id == bridge and caller.bridge_id == bridge
        )
        assert bridge is not None and fake_asterisk.bridges[bridge].moh is None
        assert _live_bridges(fake_asterisk) == [[caller.id, desk.id]]

        await desk.hang_up()
        await caller.wait_ended()
    [result] = results
    assert (result.ended_by, result.transferred_to) == ("target", ())


async def _consulting(fake: FakeAsterisk, number: str) -> tuple[FakeCall, FakeCall, FakeCall]:
    """The caller, the desk and the target once the desk pressed *2 number #."""
    caller = await fake.incoming(extension="1000")
    await fake.wait_until(lambda: len(fake.originated) == 1)
    [desk] = fake.originated
    await fake.wait_until(lambda: desk.bridge_id is not None)
    await desk.press(f"*2{number}#")
    await fake.wait_until(lambda: len(fake.originated) == 2)
    return caller, desk, fake.originated[1]


async def test_the_target_hanging_up_while_consulting_brings_the_desk_back(
    fake_asterisk: FakeAsterisk, forwarding: Forwarding
) -> None:
    app, results = forwarding()

    async with fake_asterisk.serve(app):
        caller, desk, target = await _consulting(fake_asterisk, "300")
        await fake_asterisk.wait_until(lambda: target.bridge_id == desk.bridge_id)
        await target.hang_up()
        await fake_asterisk.wait_until(lambda: caller.bridge_id == desk.bridge_id)
        assert _live_bridges(fake_asterisk) == [[caller.id, desk.id]]
        assert len(app.registry.bridges) == 1
        await desk.hang_up()
        await caller.wait_ended()
    [result] = results
    assert (result.ended_by, result.transferred_to) == ("target", ())


async def test_the_desk_hanging_up_while_the_target_rings_completes_on_answer(
    fake_asterisk: FakeAsterisk, forwarding: Forwarding
) -> None:
    app, results = forwarding()
    fake_asterisk.endpoint_outcomes["PJSIP/302"] = "ring"

    async with fake_asterisk.serve(app):
        caller, desk, target = await _consulting(fake_asterisk, "302")
        await desk.hang_up()
        await target.answer()
        await fake_asterisk.wait_until(
            lambda: target.bridge_id is not None and caller.bridge_id == target.bridge_id
        )
        assert _live_bridges(fake_asterisk) == [[caller.id, target.id]]
        await target.hang_up()
        await caller.wait_ended()
    [result] = results
    assert (result.ended_by, result.transferred_to) == ("target", ("PJSIP/302",))


async def test_the_caller_hanging_up_while_consulting_releases_everything(
    fake_asterisk: FakeAsterisk, forwarding: Forwarding
) -> None:
    app, _ = forwarding()

    async with fake_asterisk.serve(app):
        caller, desk, target = await _consulting(fake_asterisk, "300")
        await fake_asterisk.wait_until(lambda: target.bridge_id == desk.bridge_id)
        await caller.hang_up()
        await desk.wait_ended()
        await target.wait_ended()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        assert _live_bridges(fake_asterisk) == []
        assert list(app.registry.bridges) == []


def test_transfer_keys_are_checked() -> None:
    with pytest.raises(ConfigError):
        TransferKeys(endpoint="PJSIP/desk")
    with pytest.raises(ConfigError):
        TransferKeys(start="2")
