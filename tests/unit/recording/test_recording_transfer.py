"""A recording running when the call is transferred into the dialplan is stopped and
delivered at once (FakeAsterisk).

The caller's channel lives on in the dialplan, and with it the snoop the recording is
made of: nothing but the app's stop ends it. It used to run on, teardown waited 10 s
for it to be stored, then gave up: the recording stayed live in Asterisk and its
journal in the spool's ``.incoming`` until the next start.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fake_apps import routed_app

from voxtra.calls.session import CallSession
from voxtra.testing.fake_asterisk import FakeAsterisk
from voxtra.testing.fake_asterisk.calls import FakeCall

Transfer = Callable[[CallSession], Awaitable[None]]


async def _to_extension(call: CallSession) -> None:
    await call.transfer_to("1000@somewhere")


async def _to_queue(call: CallSession) -> None:
    await call.transfer_to_queue("sales")


def _snoops(fake: FakeAsterisk) -> list[FakeCall]:
    return [c for c in fake.channels.values() if c.kind == "snoop" and not c.ended]


@pytest.mark.parametrize(
    ("transfer", "where"),
    [(_to_extension, "1000@somewhere"), (_to_queue, "sales@voxtra-queues")],
    ids=["transfer_to", "transfer_to_queue"],
)
async def test_a_recording_is_delivered_promptly_when_the_call_is_transferred(
    fake_asterisk: FakeAsterisk, tmp_path: Path, transfer: Transfer, where: str
) -> None:
    names: list[str] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        names.append(await call.record_start("xfer-rec"))
        await transfer(call)

    app = routed_app(tmp_path, "rec-transfer", handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await caller.wait_left_app()
        left = time.monotonic()
        assert app.recordings is not None
        meta = await app.recordings.wait_delivered("xfer-rec", timeout=15)
        delivered_after = time.monotonic() - left
        await fake_asterisk.wait_until(lambda: not app.active_sessions, timeout=5)
        torn_down_after = time.monotonic() - left
        assert await app.recordings.drain(5)
        assert await app.recordings.spooled() == []
        # The caller is in the dialplan, nothing of the recording is left anywhere.
        assert caller.transferred_to == where and not caller.ended
        assert not _snoops(fake_asterisk)
        assert not fake_asterisk.live_recordings
        await fake_asterisk.wait_until(lambda: "xfer-rec" not in fake_asterisk.stored_recordings)

    assert names == ["xfer-rec"]
    # The 10 s stall was FINISH_TIMEOUT; well under it means no wait for a store that
    # would never come.
    assert delivered_after < 3.0 and torn_down_after < 3.0, (delivered_after, torn_down_after)
    assert meta.location is not None and meta.local_path is not None
    assert meta.local_path.is_file()
    assert list((tmp_path / "spool" / ".incoming").iterdir()) == []
