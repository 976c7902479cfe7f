"""``call.dial`` on FakeAsterisk: outcomes, the first answer wins, and no leg outlives
its call (issue 14: "the second leg has no owner")."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apps import fake_app

from voxtra import CallSession, VoxtraApp
from voxtra.ari.transport import AriRequest, AriResponse
from voxtra.calls.dial import DialResult
from voxtra.errors import ConfigError
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[[], VoxtraApp]:
    return functools.partial(fake_app, tmp_path, "dial-tests")


def _legs_left(fake: FakeAsterisk) -> list[str]:
    return [c.id for c in fake.originated if not c.ended]


async def test_the_first_to_answer_is_bridged_and_the_others_hung_up(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    results: list[DialResult] = []
    fake_asterisk.endpoint_outcomes["PJSIP/slow"] = "ring"  # rings until hung up

    @app.route("1000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        results.append(await call.dial(["PJSIP/slow", "PJSIP/fast"], timeout=5))
        await call.play_and_wait("sound:goodbye")

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 2)
        slow, fast = fake_asterisk.originated
        await slow.wait_ended()  # the loser is hung up once the other answered
        await fake_asterisk.wait_until(lambda: fast.bridge_id is not None)
        assert caller.played[0] == "tone:ring"  # ringback while they rang
        await fast.hang_up()  # the target leaves: the caller is back with the handler
        await caller.wait_ended()
        assert _legs_left(fake_asterisk) == []
    [result] = results
    assert result.outcome == "answered" and result.target == "PJSIP/fast"
    assert result.ended_by == "target"
    assert caller.played[-1] == "sound:goodbye"


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ({"PJSIP/a": "busy", "PJSIP/b": "noanswer"}, "busy"),
        ({"PJSIP/a": "noanswer", "PJSIP/b": "congestion"}, "no_answer"),
        ({"PJSIP/a": "congestion", "PJSIP/b": "congestion"}, "failed"),
    ],
)
async def test_nobody_answering_gives_the_outcome(
    fake_asterisk: FakeAsterisk,
    make_app: Callable[[], VoxtraApp],
    outcomes: dict[str, str],
    expected: str,
) -> None:
    app = make_app()
    results: list[DialResult] = []
    fake_asterisk.endpoint_outcomes.update(outcomes)

    @app.route("2000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        results.append(await call.dial(["PJSIP/a", "PJSIP/b"], timeout=5, ringback=False))

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="2000")
        await caller.wait_ended()
        assert _legs_left(fake_asterisk) == []
    assert [r.outcome for r in results] == [expected]
    assert results[0].reason


async def test_sequential_dial_tries_the_next_after_a_busy_one(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    results: list[DialResult] = []
    fake_asterisk.endpoint_outcomes["PJSIP/first"] = "busy"

    @app.route("3000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        results.append(await call.dial(["PJSIP/first", "PJSIP/second"], sequential=True))

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="3000")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 2)
        second = fake_asterisk.originated[1]
        await fake_asterisk.wait_until(lambda: second.bridge_id is not None)
        await caller.hang_up()  # the caller leaves: the call ends, its leg with it
        await second.wait_ended()
    assert [(r.outcome, r.target, r.ended_by) for r in results] == [
        ("answered", "PJSIP/second", "caller")
    ]


async def test_a_leg_ringing_when_the_caller_hangs_up_is_hung_up(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    results: list[DialResult] = []
    fake_asterisk.dial_outcome = "ring"

    @app.route("4000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        results.append(await call.dial("PJSIP/nobody-home", timeout=30))

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="4000")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 1)
        await caller.hang_up()
        await fake_asterisk.originated[0].wait_ended(timeout=2)  # not after 30 s
    assert [r.outcome for r in results] == ["canceled"]


async def test_a_handler_that_raises_while_connected_leaves_no_leg(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()

    @app.route("5000")
    async def forward(call: CallSession) -> None:
        await call.answer()

        async def dial_then_fail() -> None:
            await call.dial("PJSIP/agent")

        task = asyncio.ensure_future(dial_then_fail())
        await fake_asterisk.wait_until(lambda: any(c.bridge_id for c in fake_asterisk.originated))
        task.cancel()  # the handler's own code gives up on the dial
        raise RuntimeError("a bug in the handler")

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="5000")
        await caller.wait_ended()
        await fake_asterisk.originated[0].wait_ended()
        assert _legs_left(fake_asterisk) == [] and fake_asterisk.bridges == {}


async def test_bad_targets_are_refused_before_any_request(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    errors: list[Exception] = []

    @app.route("6000")
    async def forward(call: CallSession) -> None:
        for bad in ([], "100", ["PJSIP/ok", 5]):
            try:
                await call.dial(bad)  # type: ignore[arg-type]
            except ConfigError as exc:
                errors.append(exc)

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="6000")
        await caller.wait_ended()
    assert len(errors) == 3 and fake_asterisk.originated == []


async def test_a_dial_cancelled_while_the_parties_are_bridged_leaves_nothing_up(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    """The dial is given up (a time limit around it) while Asterisk puts the caller and
    the answered party in the dial bridge: the party is hung up, the bridge destroyed
    and the caller back in its media bridge, with the handler. Only a cancel while they
    talked did that; one during the bridging left the party up and the caller in the
    dial bridge until the call ended (the handler's next say() reached nobody)."""
    app = make_app()
    serve_request = fake_asterisk.handle_request
    joining = asyncio.Event()

    async def slow_bridging(request: AriRequest) -> AriResponse:
        path = request.path
        if request.method == "POST" and "voxtra-internal-dial" in path and "addChannel" in path:
            answer = await serve_request(request)  # Asterisk did it...
            joining.set()
            await asyncio.sleep(3600)  # ...and its answer is slow to come
            return answer
        return await serve_request(request)

    fake_asterisk.handle_request = slow_bridging  # type: ignore[method-assign]
    after: list[object] = []
    release = asyncio.Event()

    @app.route("2000")
    async def forward(call: CallSession) -> None:
        await call.answer()
        await call.media()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.wait_for(call.dial("PJSIP/a", timeout=5, ringback=False), 1.0)
        media_channel = call.media_path.channel_id
        home = next(b for b in fake_asterisk.bridges.values() if media_channel in b.channels)
        after.append(call.id in home.channels)
        await release.wait()
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="2000")
        await asyncio.wait_for(joining.wait(), 5)
        (leg,) = fake_asterisk.originated
        await leg.wait_ended()  # hung up with the dial, not with the call
        await fake_asterisk.wait_until(lambda: bool(after))
        assert after == [True]  # back in its media bridge
        assert not caller.ended
        assert not any("voxtra-internal-dial" in b for b in fake_asterisk.bridges)
        release.set()
        await caller.wait_ended()
