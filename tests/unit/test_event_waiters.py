"""A call's event waits do not block one another: a ``wait_for_event()`` predicate
that raises ends its own wait with the error, and every other wait of the call still
gets the event.

It was raised inside the event's dispatch: the event stream logged it, the waits after
it in the call's list (its playbacks, the handler's other waits) never saw the event,
and the wait whose predicate raised ran into its timeout instead of raising.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fake_apps import fake_app

from voxtra import CallSession
from voxtra.ari.events import AriEvent, ChannelDtmfReceived
from voxtra.testing import FakeAsterisk


async def test_a_predicate_that_raises_ends_its_own_wait_and_blocks_no_other(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = fake_app(tmp_path, "waiters-predicate")
    seen: dict[str, Any] = {}
    ready = asyncio.Event()

    @app.route("_X.")
    async def handler(call: CallSession) -> None:
        await call.answer()
        # A user's bug: not every event has a digit (a playback's events have none).
        wrong = call.spawn(_outcome(call.wait_for_event(AriEvent, lambda e: e.digit == "5", 10)))
        # "#" is no number: the predicate raises ValueError on the key below.
        key = call.spawn(_outcome(call.wait_for_event(ChannelDtmfReceived, _above_five, 10)))
        digit = call.spawn(_outcome(call.wait_for_event(ChannelDtmfReceived, timeout=10)))
        await asyncio.sleep(0)  # the three waits are registered
        seen["playback"] = await _outcome(call.play_and_wait("sound:beep", timeout=3))
        ready.set()
        seen["key"] = await key
        seen["digit"] = await digit
        seen["wrong"] = await wrong
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await asyncio.wait_for(ready.wait(), 10)
        await caller.press("#")
        await fake_asterisk.wait_until(lambda: "wrong" in seen, timeout=20)

    assert seen["playback"] is None  # finished, not timed out
    assert isinstance(seen["key"], ValueError)
    assert isinstance(seen["digit"], ChannelDtmfReceived) and seen["digit"].digit == "#"
    assert isinstance(seen["wrong"], AttributeError)


def _above_five(event: ChannelDtmfReceived) -> bool:
    return int(event.digit) > 5


async def _outcome(wait: Any) -> Any:
    """What ``wait`` returned, or the exception it raised."""
    try:
        return await wait
    except Exception as exc:
        return exc


async def test_a_predicate_raising_stop_iteration_ends_its_wait_too(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # A future refuses StopIteration (TypeError from set_exception): raised out of the
    # dispatch, the other waits missed the event again.
    app = fake_app(tmp_path, "waiters-stop")
    seen: dict[str, Any] = {}
    ready = asyncio.Event()

    def exhausted(event: ChannelDtmfReceived) -> bool:
        return next(iter(()))  # type: ignore[no-any-return]

    @app.route("_X.")
    async def handler(call: CallSession) -> None:
        await call.answer()
        odd = call.spawn(_outcome(call.wait_for_event(ChannelDtmfReceived, exhausted, 10)))
        digit = call.spawn(_outcome(call.wait_for_event(ChannelDtmfReceived, timeout=10)))
        await asyncio.sleep(0)
        ready.set()
        seen["odd"] = await odd
        seen["digit"] = await digit
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await asyncio.wait_for(ready.wait(), 10)
        await caller.press("1")
        await fake_asterisk.wait_until(lambda: "digit" in seen, timeout=20)

    assert isinstance(seen["odd"], RuntimeError) and "StopIteration" in str(seen["odd"])
    assert isinstance(seen["digit"], ChannelDtmfReceived) and seen["digit"].digit == "1"
