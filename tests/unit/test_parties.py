"""Three-party calls against FakeAsterisk: which channel is in which bridge, which snoop
whispers where, in each mode and after each command (the who-hears-what of each
topology is measured with real phones in tests/integration/test_three_party.py)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_apps import routed_app

from voxtra import CallSession, VoxtraApp
from voxtra.calls import parties as parties_module
from voxtra.calls.parties import (
    AgentMode,
    PartyError,
    PartyState,
    SupervisorMode,
    TransferDeclined,
    callee_endpoint,
)
from voxtra.errors import (
    CallBusy,
    CallEnded,
    CallFailed,
    CallNoAnswer,
    ConfigError,
    PipelineNotConfigured,
)
from voxtra.media.frames import AudioChunk
from voxtra.testing import FakeAsterisk
from voxtra.testing.fake_asterisk import core as fcore
from voxtra.testing.fake_asterisk.calls import FakeCall

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Handler = Callable[[CallSession], Awaitable[None]]
SUPERVISOR_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "supervisor.py"


def make_app(tmp_path: Path, handler: Handler, **metadata: Any) -> VoxtraApp:
    return routed_app(tmp_path, "parties-tests", handler, metadata=metadata or None)


@contextlib.asynccontextmanager
async def answered_call(
    fake: FakeAsterisk, tmp_path: Path, *, media: bool
) -> AsyncIterator[tuple[VoxtraApp, FakeCall, CallSession]]:
    """A caller on extension 200 whose handler answered (and, with ``media``, attached
    the call's media: an AI agent on the call) and waits for the end; the app served."""
    ready = asyncio.Event()
    session: list[CallSession] = []

    async def handler(call: CallSession) -> None:
        session.append(call)
        await call.answer()
        if media:
            await call.media()
        ready.set()
        await call.wait_ended()

    app = make_app(tmp_path, handler)
    async with fake.serve(app):
        caller = await fake.incoming(extension="200")
        await asyncio.wait_for(ready.wait(), 5)
        yield app, caller, session[0]


def bridge_of(fake: FakeAsterisk, channel_id: str | None) -> set[str]:
    """The ids in the bridge ``channel_id`` is in (empty: in none)."""
    for bridge in fake.bridges.values():
        if channel_id in bridge.channels:
            return set(bridge.channels)
    return set()


def snoops(fake: FakeAsterisk) -> list[FakeCall]:
    return [c for c in fake.channels.values() if c.kind == "snoop" and not c.ended]


def seat(fake: FakeAsterisk) -> tuple[str, str, str]:
    """The one live snoop: (spied channel id, spy, whisper)."""
    (snoop,) = snoops(fake)
    assert snoop.spied is not None
    return snoop.spied.id, snoop.spy, snoop.whisper


async def test_connect_dials_the_called_number_and_each_mode_seats_the_agent(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    step = asyncio.Queue[str]()
    go = asyncio.Queue[None]()
    session: list[CallSession] = []

    async def handler(call: CallSession) -> None:
        session.append(call)
        await call.answer()
        await call.connect(ring_time=5)
        commands: list[Callable[[], Awaitable[None]]] = [
            call.whisper,
            lambda: call.whisper(to="caller"),
            call.spy,
            call.barge,
        ]
        for command in commands:
            step.put_nowait(call.agent_mode)
            await go.get()
            await command()
        step.put_nowait(call.agent_mode)
        await go.get()
        await call.disconnect()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        seen: list[Any] = []
        for _ in range(5):
            seen.append(await asyncio.wait_for(step.get(), 5))
            (callee,) = fake_asterisk.originated
            media = session[0].media_path
            # caller and callee in one bridge; the agent's channel and seat in another
            assert bridge_of(fake_asterisk, caller.id) == {caller.id, callee.id}
            (snoop,) = snoops(fake_asterisk)
            assert bridge_of(fake_asterisk, media.channel_id) == {media.channel_id, snoop.id}
            spied, spy, whisper = seat(fake_asterisk)
            assert spy == "both"  # the agent hears both parties in every mode
            who = "caller" if spied == caller.id else "callee"
            seen[-1] = (seen[-1], who, whisper)
            go.put_nowait(None)
        await caller.wait_ended()
        await callee.wait_ended()

    assert callee.endpoint == "PJSIP/200"  # the called number, through the default template
    assert caller.played == ["tone:ring"]
    assert seen == [
        ("barge", "callee", "both"),
        ("whisper(to='callee')", "callee", "out"),
        ("whisper(to='caller')", "caller", "out"),
        ("spy", "callee", "none"),
        ("barge", "callee", "both"),
    ]
    assert not fake_asterisk.bridges and not snoops(fake_asterisk)
    assert not [c for c in fake_asterisk.channels.values() if not c.ended]


@pytest.mark.parametrize(
    ("outcome", "error"),
    [("busy", CallBusy), ("noanswer", CallNoAnswer), ("congestion", CallFailed)],
)
async def test_an_unreachable_callee_raises_its_outcome_and_the_caller_stays_with_the_agent(
    fake_asterisk: FakeAsterisk, tmp_path: Path, outcome: str, error: type[Exception]
) -> None:
    raised: list[BaseException] = []
    after: list[Any] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()
        try:
            await call.connect(ring_time=5, to="PJSIP/bob")
        except Exception as exc:
            raised.append(exc)
        media = call.media_path
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id), media.channel_id))
        await call.hangup()

    fake_asterisk.endpoint_outcomes["PJSIP/bob"] = outcome
    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()

    assert len(raised) == 1 and isinstance(raised[0], error), raised
    state, bridge, media_channel = after[0]
    assert state is PartyState.ALONE
    assert bridge == {caller.id, media_channel}  # still with the agent
    assert all(leg.ended for leg in fake_asterisk.originated)


async def test_close_leaves_the_parties_bridged_until_one_hangs_up(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    closed = asyncio.Event()
    agent: list[str | None] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5, to="300")
        agent.extend([call.parties.snoop_id, call.media_path.channel_id])
        await call.close()
        await call.close()  # idempotent
        with pytest.raises(PartyError):  # the agent has left: nothing to send or hear
            await call.send_audio(AudioChunk(b"\xff" * 160))
        with pytest.raises(PartyError):
            await call.listen(timeout=1)
        closed.set()  # and the handler returns: the call stays up

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(closed.wait(), 5)
        (callee,) = fake_asterisk.originated
        await asyncio.sleep(0.2)
        assert not caller.ended and not callee.ended
        assert bridge_of(fake_asterisk, caller.id) == {caller.id, callee.id}
        assert len(fake_asterisk.bridges) == 1  # the agent's bridge is gone
        for channel_id in agent:
            assert (
                channel_id not in fake_asterisk.channels or fake_asterisk.channels[channel_id].ended
            )
        await callee.hang_up()
        await caller.wait_ended()

    assert callee.endpoint == "PJSIP/300"
    assert not fake_asterisk.bridges


async def test_the_callee_hanging_up_brings_the_caller_back_to_the_agent(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    connected = asyncio.Event()
    back = asyncio.Event()
    states: list[Any] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5)
        connected.set()
        await back.wait()
        states.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        states.append(call.media_path.channel_id)
        await call.close()  # the callee left first: nothing to leave, not an error
        await call.connect(ring_time=5)  # and it can connect again
        states.append(call.parties.state)
        await call.disconnect()

    app = make_app(tmp_path, handler, connect_endpoint="PJSIP/{number}@trunk")
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="250")
        await asyncio.wait_for(connected.wait(), 5)
        first = fake_asterisk.originated[0]
        await first.hang_up()
        await fake_asterisk.wait_until(lambda: not snoops(fake_asterisk))
        await fake_asterisk.wait_until(lambda: len(bridge_of(fake_asterisk, caller.id)) == 2)
        back.set()
        await caller.wait_ended()

    state, bridge = states[0]
    assert state is PartyState.ALONE
    assert bridge == {caller.id, states[1]}
    assert states[2] is PartyState.CONNECTED
    assert [leg.endpoint for leg in fake_asterisk.originated] == ["PJSIP/250@trunk"] * 2
    assert not fake_asterisk.bridges


async def test_misuse_is_a_party_error(fake_asterisk: FakeAsterisk, tmp_path: Path) -> None:
    errors: list[str] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        for command in (call.barge, call.spy, call.whisper, call.close):
            with pytest.raises(PartyError):
                await command()
        await call.connect(ring_time=5)
        with pytest.raises(PartyError):
            await call.connect(ring_time=5)
        await call.spy()
        with pytest.raises(PartyError) as info:
            await call.say("hello")
        errors.append(str(info.value))
        with pytest.raises(ConfigError):
            await call.whisper(to="agent")
        await call.disconnect()
        await call.disconnect()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()
    assert errors and "spying" in errors[0]


def test_a_number_maps_to_an_endpoint() -> None:
    assert callee_endpoint(None, "200") == "PJSIP/200"
    assert callee_endpoint("+15551234", "200", "PJSIP/trunk/sip:{number}@carrier") == (
        "PJSIP/trunk/sip:+15551234@carrier"
    )
    assert callee_endpoint("Local/x@ctx", "200", "PJSIP/{number}") == "Local/x@ctx"
    for bad in ("", "1&PJSIP/evil", "200,30"):
        with pytest.raises(ConfigError):
            callee_endpoint(None, bad)
    with pytest.raises(ConfigError):
        callee_endpoint(None, "200", "PJSIP/trunk")
    assert AgentMode("whisper", "caller").seat == ("caller", "out")


async def test_a_warm_transfer_holds_the_caller_briefs_the_target_then_leaves(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    during: list[Any] = []
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()

        async def briefing(c: CallSession) -> bool:
            (target,) = fake_asterisk.originated
            parties_bridge = fake_asterisk.bridges[str(c.parties.bridge_id)]
            during.append(
                (
                    bridge_of(fake_asterisk, c.id),
                    parties_bridge.moh,
                    bridge_of(fake_asterisk, target.id),
                    c.media_path.channel_id,
                )
            )
            return True

        await call.transfer_to("PJSIP/sales", warm=True, briefing=briefing)
        during.append((call.parties.state, call.handed_off))
        done.set()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(done.wait(), 5)
        (target,) = fake_asterisk.originated
        await asyncio.sleep(0.1)
        assert not caller.ended
        assert bridge_of(fake_asterisk, caller.id) == {caller.id, target.id}
        assert fake_asterisk.bridges[next(iter(fake_asterisk.bridges))].moh is None
        assert len(fake_asterisk.bridges) == 1 and not snoops(fake_asterisk)
        await target.hang_up()
        await caller.wait_ended()

    caller_bridge, moh, target_bridge, media_channel = during[0]
    assert caller_bridge == {caller.id} and moh == "default"  # alone, on hold
    assert target_bridge == {target.id, media_channel}  # with the agent
    assert during[1] == (PartyState.CLOSED, True)
    assert target.endpoint == "PJSIP/sales"


@pytest.mark.parametrize("how", ["busy", "declined"])
async def test_a_failed_warm_transfer_brings_the_caller_back_with_the_outcome(
    fake_asterisk: FakeAsterisk, tmp_path: Path, how: str
) -> None:
    after: list[Any] = []

    async def handler(call: CallSession) -> None:
        await call.answer()

        async def no(c: CallSession) -> bool:
            return False

        try:
            await call.transfer_to("PJSIP/sales", warm=True, briefing=no)
        except Exception as exc:
            after.append(exc)
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        after.append(call.media_path.channel_id)
        after.append([b.moh for b in fake_asterisk.bridges.values()])
        await call.hangup()

    if how == "busy":
        fake_asterisk.endpoint_outcomes["PJSIP/sales"] = "busy"
    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()

    error, (state, bridge), media_channel, mohs = after
    assert isinstance(error, CallBusy if how == "busy" else TransferDeclined), error
    assert state is PartyState.ALONE
    assert bridge == {caller.id, media_channel}
    assert mohs == [None]  # the parties' bridge is gone, the agent's plays no music
    assert all(leg.ended for leg in fake_asterisk.originated)


async def test_a_warm_transfer_needs_something_to_say(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    async def handler(call: CallSession) -> None:
        await call.answer()
        with pytest.raises(ConfigError):
            await call.transfer_to("PJSIP/sales", warm=True)
        with pytest.raises(PipelineNotConfigured):
            await call.transfer_to("PJSIP/sales", warm=True, summary="A caller")
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()
    assert not fake_asterisk.originated


async def test_party_audio_listens_to_each_party_through_a_snoop_of_its_own(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    connected = asyncio.Event()
    ended = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5)
        connected.set()
        async for _party, _chunk in call.party_audio():
            pass  # ends when the callee leaves
        ended.set()
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(connected.wait(), 5)
        (callee,) = fake_asterisk.originated
        await fake_asterisk.wait_until(
            lambda: len([s for s in snoops(fake_asterisk) if s.spy == "in"]) == 2
        )
        await fake_asterisk.wait_until(
            lambda: all(
                len(bridge_of(fake_asterisk, s.id)) == 2
                for s in snoops(fake_asterisk)
                if s.spy == "in"
            )
        )
        listeners = [s for s in snoops(fake_asterisk) if s.spy == "in"]
        assert {s.spied.id for s in listeners if s.spied} == {caller.id, callee.id}
        for snoop in listeners:
            (other,) = bridge_of(fake_asterisk, snoop.id) - {snoop.id}
            assert fake_asterisk.channels[other].kind == "external"
            assert snoop.whisper == "none"
        await callee.hang_up()
        await asyncio.wait_for(ended.wait(), 5)
        await caller.wait_ended()
    assert all(s.ended for s in listeners)
    assert not fake_asterisk.bridges


async def test_a_supervisor_joins_switches_mode_and_leaves(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    async with answered_call(fake_asterisk, tmp_path, media=True) as (app, caller, call):
        supervision = await app.supervise(call.id, "PJSIP/boss", "spy")
        (boss,) = fake_asterisk.originated
        seen = []
        for mode in (
            None,
            SupervisorMode("whisper", "agent"),
            SupervisorMode("whisper", "caller"),
            SupervisorMode("barge"),
        ):
            if mode is not None:
                await supervision.set_mode(mode)
            (snoop,) = [s for s in snoops(fake_asterisk) if s.id == supervision.snoop_id]
            assert len(snoops(fake_asterisk)) == 1
            assert bridge_of(fake_asterisk, boss.id) == {boss.id, snoop.id}
            assert snoop.spied is not None and snoop.spy == "both"
            who = "caller" if snoop.spied.id == caller.id else snoop.spied.kind
            seen.append((str(supervision.mode), who, snoop.whisper))
        await boss.hang_up()
        await fake_asterisk.wait_until(lambda: not snoops(fake_asterisk))
        assert not caller.ended
        assert len(fake_asterisk.bridges) == 1  # the agent's media bridge only
        with pytest.raises(PartyError):
            await supervision.set_mode(SupervisorMode("spy"))
        with pytest.raises(ConfigError):
            await app.supervise(call.id, "PJSIP/boss", "whisper", to="callee")
        await caller.hang_up()

    assert seen == [
        ("spy", "caller", "none"),
        ("whisper(to='agent')", "external", "out"),  # the AI agent's media channel
        ("whisper(to='caller')", "caller", "out"),
        ("barge", "caller", "both"),
    ]
    assert not fake_asterisk.bridges


async def test_the_supervisor_example_spies_coaches_and_barges(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("supervisor_example", SUPERVISOR_EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(
        example,
        "COACHING",
        [(0.05, SupervisorMode("whisper", "agent")), (0.05, SupervisorMode("barge"))],
    )
    fake_asterisk.playback_duration = 5.0
    app = example.app
    app.use_app_name("supervisor-example")
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="300")
        # The barge's snoop joins before the whisper's goes (no gap in what the
        # supervisor hears): wait for the old one to have gone too. A CI run on a loaded
        # box read the two snoops in between.
        await fake_asterisk.wait_until(
            lambda: [s.whisper for s in snoops(fake_asterisk)] == ["both"]
        )
        (boss,) = fake_asterisk.originated
        assert boss.endpoint == "PJSIP/supervisor"
        (snoop,) = snoops(fake_asterisk)
        assert snoop.spied is caller and bridge_of(fake_asterisk, boss.id) == {boss.id, snoop.id}
        await caller.hang_up()
        await boss.wait_ended()
    assert not fake_asterisk.bridges


@pytest.mark.parametrize("who", ["caller hangs up", "disconnect"])
async def test_the_call_ending_while_the_callee_rings_stops_the_dial(
    fake_asterisk: FakeAsterisk, tmp_path: Path, who: str
) -> None:
    raised: list[BaseException] = []
    ringing = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        if who == "disconnect":
            call.spawn(disconnect_soon(call))
        try:
            await call.connect(ring_time=30, to="PJSIP/slow")
        except BaseException as exc:
            raised.append(exc)
            raise

    async def disconnect_soon(call: CallSession) -> None:
        await ringing.wait()
        await call.disconnect()

    fake_asterisk.endpoint_outcomes["PJSIP/slow"] = "ring"
    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await fake_asterisk.wait_until(lambda: len(fake_asterisk.originated) == 1)
        await caller.wait_until(lambda c: c.played == ["tone:ring"])  # ringback meanwhile
        ringing.set()
        if who == "caller hangs up":
            await caller.hang_up()
        await caller.wait_ended()
        await fake_asterisk.originated[0].wait_ended()
    assert len(raised) == 1 and isinstance(raised[0], CallEnded), raised
    assert not fake_asterisk.bridges


async def test_a_supervisor_on_a_call_without_media_spies_and_cannot_coach(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # An IVR-style call: no media path, no AI agent.
    async with answered_call(fake_asterisk, tmp_path, media=False) as (app, caller, call):
        supervision = await app.supervise(call.id, "PJSIP/boss", "spy")
        assert not [c for c in fake_asterisk.channels.values() if c.kind == "external"]
        with pytest.raises(PartyError):
            await supervision.set_mode(SupervisorMode("whisper", "agent"))
        assert str(supervision.mode) == "spy"
        await supervision.end()
        await supervision.end()  # idempotent
        await fake_asterisk.originated[0].wait_ended()
        await caller.hang_up()
    assert not fake_asterisk.bridges


async def test_a_blind_transfer_to_a_busy_endpoint_raises_call_busy(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """The kernel's dial_leg (used by connect() and transfer_to(endpoint)) says why a
    leg was not answered; it raised CallEnded about the leg before."""
    raised: list[BaseException] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        try:
            await call.transfer_to("PJSIP/busy", timeout=5)
        except Exception as exc:
            raised.append(exc)
        await call.hangup()

    fake_asterisk.endpoint_outcomes["PJSIP/busy"] = "busy"
    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()
    assert len(raised) == 1 and isinstance(raised[0], CallBusy), raised
    assert raised[0].cause == 17


async def test_the_supervisor_switches_mode_with_its_phone_keys(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    async with answered_call(fake_asterisk, tmp_path, media=True) as (app, caller, call):
        supervision = await app.supervise(call.id, "PJSIP/boss", "spy")
        (boss,) = fake_asterisk.originated
        seen = []
        expected = ["whisper(to='agent')", "whisper(to='caller')", "barge", "barge"]
        for key, mode in zip("2349", expected, strict=True):  # 9 is no mode: ignored
            await boss.press(key)
            await fake_asterisk.wait_until(
                lambda m=mode: str(supervision.mode) == m and len(snoops(fake_asterisk)) == 1  # type: ignore[misc]
            )
            await asyncio.sleep(0.05)
            (snoop,) = snoops(fake_asterisk)
            seen.append((str(supervision.mode), snoop.whisper))
        await boss.hang_up()
        await caller.hang_up()
    assert seen == [
        ("whisper(to='agent')", "out"),
        ("whisper(to='caller')", "out"),
        ("barge", "both"),
        ("barge", "both"),
    ]


async def test_a_supervisor_coaching_the_callee_follows_the_agent_when_it_leaves(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    connected = asyncio.Event()
    session: list[CallSession] = []

    async def handler(call: CallSession) -> None:
        session.append(call)
        await call.answer()
        await call.connect(ring_time=5)  # a person the AI put through is "the agent"
        connected.set()
        await call.wait_ended()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(connected.wait(), 5)
        supervision = await app.supervise(session[0].id, "PJSIP/boss", "whisper", to="agent")
        callee, _boss = fake_asterisk.originated
        (seat,) = [s for s in snoops(fake_asterisk) if s.id == supervision.snoop_id]
        assert seat.spied is callee and seat.whisper == "out"
        await callee.hang_up()  # the AI agent is the agent again
        await fake_asterisk.wait_until(
            lambda: any(
                s.id == supervision.snoop_id and s.spied is not None and s.spied.kind == "external"
                for s in snoops(fake_asterisk)
            )
        )
        assert str(supervision.mode) == "whisper(to='agent')"
        await caller.hang_up()
    assert not fake_asterisk.bridges


@pytest.mark.parametrize("how", ["refused", "cancelled"])
async def test_a_ringback_that_fails_or_is_cancelled_leaves_the_call_alone(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    after: list[Any] = []
    play = fake_asterisk._r_play

    def refused(request: Any, id: str, playback: str | None = None) -> Any:
        raise fcore._Fail(500, "Internal Server Error")

    async def slow(request: Any, id: str, playback: str | None = None) -> Any:
        await asyncio.sleep(0.3)  # answered after the connect gave up
        return play(request, id, playback)

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()
        monkeypatch.setattr(fake_asterisk, "_r_play", refused if how == "refused" else slow)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.1):
                await call.connect(ring_time=5, to="PJSIP/bob")
        await asyncio.sleep(0.4)  # the slow play's answer is in
        monkeypatch.setattr(fake_asterisk, "_r_play", play)
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        after.append(list(fake_asterisk.playbacks))  # the ringback was stopped
        await call.connect(ring_time=5, to="PJSIP/bob", ringback=False)  # not refused
        after.append(call.parties.state)
        await call.close()
        await call.hangup()

    fake_asterisk.playback_duration = 30.0  # tone:ring plays until stopped
    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()

    (state, bridge), playing, connected = after
    assert state is PartyState.ALONE
    assert len(bridge) == 2 and caller.id in bridge  # still with the agent
    assert playing == []
    assert connected is PartyState.CONNECTED
    assert len(fake_asterisk.originated) == 1  # the first connect dialled nobody


async def test_a_snoop_that_never_starts_is_a_party_error_and_the_keys_go_on(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enter = fake_asterisk._enter_app
    late = {"snoops": 0}

    def enter_but_late(call: FakeCall, app: str, args: list[str]) -> None:
        if call.kind == "snoop" and late["snoops"] > 0:
            late["snoops"] -= 1  # its StasisStart never comes
            return
        enter(call, app, args)

    monkeypatch.setattr(fake_asterisk, "_enter_app", enter_but_late)
    monkeypatch.setattr(parties_module, "SNOOP_START", 0.2)
    async with answered_call(fake_asterisk, tmp_path, media=True) as (app, caller, call):
        supervision = await app.supervise(call.id, "PJSIP/boss", "spy")
        (boss,) = fake_asterisk.originated
        late["snoops"] = 1
        with pytest.raises(PartyError, match=r"did not enter the app within 0\.2 s") as raised:
            await supervision.set_mode(SupervisorMode("barge"))
        assert isinstance(raised.value.__cause__, TimeoutError)
        assert str(supervision.mode) == "spy" and len(snoops(fake_asterisk)) == 1  # released
        late["snoops"] = 1
        await boss.press("4")  # barge: its snoop is late, the key is logged
        await fake_asterisk.wait_until(lambda: late["snoops"] == 0)
        await asyncio.sleep(0.3)
        await boss.press("4")  # the keys task survived: this one switches
        await fake_asterisk.wait_until(lambda: str(supervision.mode) == "barge")
        assert len(snoops(fake_asterisk)) == 1
        await caller.hang_up()


@pytest.mark.parametrize("when", ["bridging", "seating"])
async def test_a_callee_hanging_up_while_it_is_connected_raises_call_failed(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The callee answers and hangs up before connect() is done with it: while the
    parties' bridge is made (addChannel then refused: 400 "Channel not found"), or
    while the agent is seated (its snoop refused: 404). connect() used to raise that
    ARI error to the handler (AriBadRequest, AriNotFound) instead of its outcome."""
    after: list[Any] = []
    create, make_snoop = fake_asterisk._r_bridge_create, fake_asterisk._r_snoop

    def hang_up_callee() -> None:
        for leg in fake_asterisk.originated:
            if not leg.ended:
                fake_asterisk.caller_hangs_up(leg)

    def hang_up_on_create(request: Any, bridge: str | None = None) -> Any:
        if "parties" in (bridge or request.params.get("bridgeId", "")):
            hang_up_callee()
        return create(request, bridge)

    def hang_up_on_snoop(request: Any, id: str, snoop: str | None = None) -> Any:
        hang_up_callee()
        return make_snoop(request, id, snoop)

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()
        if when == "bridging":
            monkeypatch.setattr(fake_asterisk, "_r_bridge_create", hang_up_on_create)
        else:
            monkeypatch.setattr(fake_asterisk, "_r_snoop", hang_up_on_snoop)
        try:
            await call.connect(ring_time=5, to="PJSIP/bob")
        except Exception as exc:
            after.append(exc)
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        after.append((call.media_path.channel_id, set(fake_asterisk.bridges)))
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()

    error, (state, bridge), (media_channel, bridges) = after
    assert isinstance(error, CallFailed), repr(error)
    assert "PJSIP/bob: the callee hung up before it was connected" in str(error)
    assert state is PartyState.ALONE
    assert bridge == {caller.id, media_channel}  # back with the agent
    assert len(bridges) == 1  # the parties' bridge is gone: only the agent's is left
    assert not fake_asterisk.bridges
    assert not [c for c in fake_asterisk.channels.values() if not c.ended]


async def test_a_target_hanging_up_during_the_briefing_ends_it_at_once(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """The agent briefs the target, which hangs up: the briefing is cut short there
    (cancelled) and the warm transfer fails with CallFailed, the caller off hold and
    back with the agent. It used to go on talking to nobody until it returned by
    itself (here: never), the caller on hold all along."""
    briefing_started = asyncio.Event()
    cancelled: list[bool] = []
    after: list[Any] = []
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()

        async def briefing(c: CallSession) -> bool:
            briefing_started.set()
            try:
                await asyncio.Event().wait()  # a briefing that goes on and on
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return True

        try:
            await call.transfer_to("PJSIP/sales", warm=True, briefing=briefing)
        except Exception as exc:
            after.append(exc)
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        after.append((call.media_path.channel_id, [b.moh for b in fake_asterisk.bridges.values()]))
        done.set()
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(briefing_started.wait(), 5)
        (target,) = fake_asterisk.originated
        await target.hang_up()
        await asyncio.wait_for(done.wait(), 5)
        await caller.wait_ended()

    error, (state, bridge), (media_channel, mohs) = after
    assert isinstance(error, CallFailed), repr(error)
    assert "the target hung up during the briefing" in str(error)
    assert cancelled == [True]
    assert state is PartyState.ALONE
    assert bridge == {caller.id, media_channel}  # back with the agent
    assert mohs == [None]  # off hold: the parties' bridge is gone
    assert not fake_asterisk.bridges
    assert not [c for c in fake_asterisk.channels.values() if not c.ended]


async def test_a_target_hanging_up_as_it_joins_the_agent_fails_the_warm_transfer(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target answers and hangs up before it is with the agent: addChannel is
    refused (400 "Channel not found"), and that is the hang-up's CallFailed, not the
    AriBadRequest it used to raise; the caller is off hold, back with the agent."""
    after: list[Any] = []
    add = fake_asterisk._r_bridge_add
    briefed: list[bool] = []

    def hang_up_as_it_joins(request: Any, bridge: str) -> Any:
        for leg in fake_asterisk.originated:
            if leg.id in request.params.get("channel", "") and not leg.ended:
                fake_asterisk.caller_hangs_up(leg)
        return add(request, bridge)

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()
        monkeypatch.setattr(fake_asterisk, "_r_bridge_add", hang_up_as_it_joins)

        async def briefing(c: CallSession) -> bool:
            briefed.append(True)
            return True

        try:
            await call.transfer_to("PJSIP/sales", warm=True, briefing=briefing)
        except Exception as exc:
            after.append(exc)
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        after.append((call.media_path.channel_id, [b.moh for b in fake_asterisk.bridges.values()]))
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()

    error, (state, bridge), (media_channel, mohs) = after
    assert isinstance(error, CallFailed), repr(error)
    assert "PJSIP/sales: the target hung up before it was connected" in str(error)
    assert briefed == []  # nobody to brief
    assert state is PartyState.ALONE
    assert bridge == {caller.id, media_channel}
    assert mohs == [None]
    assert not fake_asterisk.bridges
    assert not [c for c in fake_asterisk.channels.values() if not c.ended]


async def test_a_target_that_declines_and_hangs_up_at_once_is_a_declined_transfer(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """The briefing hears the target decline (a key, a "no") and the target hangs up
    right after, both reaching the app in one pass of the loop (Asterisk sends a key
    and a hang-up in one read): the outcome is the decline the briefing returned, not
    "hung up during the briefing" (CallFailed) as it was whenever the hang-up's event
    was in before the warm transfer looked."""
    after: list[Any] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.media()

        async def declines(c: CallSession) -> bool:
            (target,) = fake_asterisk.originated
            await target.hang_up()  # its events are on their way to the app
            return False

        try:
            await call.transfer_to("PJSIP/sales", warm=True, briefing=declines)
        except Exception as exc:
            after.append(exc)
        after.append((call.parties.state, bridge_of(fake_asterisk, call.id)))
        after.append(call.media_path.channel_id)
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()

    error, (state, bridge), media_channel = after
    assert isinstance(error, TransferDeclined), repr(error)
    assert state is PartyState.ALONE
    assert bridge == {caller.id, media_channel}
    assert not [c for c in fake_asterisk.channels.values() if not c.ended]
