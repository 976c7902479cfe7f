"""VoxtraApp, routing and CallSession against the real Asterisk (Local-channel callers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import CallBusy, CallDirection, CallFailed, CallNoAnswer, CallSession, CallState
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriNotFound, AriServerError
from voxtra.errors import CallEnded, PlaybackFailed, VariableNotSet
from voxtra.routing import CallInfo
from voxtra.testing.local_caller import place_local_call

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


class Seen:
    """What handlers did, for tests to wait on."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def add(self, label: str, value: Any = None) -> None:
        self.items.put_nowait((label, value))

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.items.get(), timeout)

    async def expect(self, label: str, timeout: float = 10.0) -> Any:
        got, value = await self.next(timeout)
        assert got == label, f"expected {label!r}, got {got!r} ({value!r})"
        return value


async def _gone(ari: AriClient, channel_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await ari.channels.get(channel_id)
        except AriNotFound:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"channel {channel_id} still exists")


async def _no_sessions(app: VoxtraApp, timeout: float = 5.0) -> None:
    """Sessions end (teardown done) shortly after their channels are gone."""
    deadline = time.monotonic() + timeout
    while app.active_sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert app.active_sessions == {}


async def test_routes_by_extension_pattern_literal_and_default(
    make_app: MakeApp, ari: AriClient
) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="_1XXX", metadata={"team": "support"})
        async def support(call: CallSession) -> None:
            seen.add("support", (call.called_number, dict(call.metadata)))

        @app.route(extension="2000")
        async def sales(call: CallSession) -> None:
            seen.add("sales", call.called_number)

        @app.default
        async def fallback(call: CallSession) -> None:
            seen.add("default", call.called_number)

    await make_app(configure)
    await place_local_call(ari, "1234")
    assert await seen.expect("support") == ("1234", {"team": "support"})
    await place_local_call(ari, "2000")
    assert await seen.expect("sales") == "2000"
    await place_local_call(ari, "999")
    assert await seen.expect("default") == "999"


async def test_routes_by_caller_and_dispatcher(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="_X.", caller="_555XXXX")
        async def vip(call: CallSession) -> None:
            seen.add("vip", call.caller_id)

        @app.route(extension="_X.")
        async def anyone(call: CallSession) -> None:
            seen.add("anyone", call.caller_id)

        async def special(call: CallSession) -> None:
            seen.add("dispatched", call.called_number)

        @app.dispatcher
        async def dispatch(info: CallInfo) -> Any:
            return special if info.extension == "4242" else None

    await make_app(configure)
    await place_local_call(ari, "3000", caller_id="Alice <5551234>")
    assert await seen.expect("vip") == "5551234"
    await place_local_call(ari, "3000", caller_id="Bob <7000>")
    assert await seen.expect("anyone") == "7000"
    await place_local_call(ari, "4242", caller_id="Bob <5551234>")
    assert await seen.expect("dispatched") == "4242"


async def test_unrouted_call_is_answered_and_hung_up(make_app: MakeApp, ari: AriClient) -> None:
    app = await make_app()
    call = await place_local_call(ari, "1111")
    await _gone(ari, call.call_id)
    await _gone(ari, call.caller_leg)
    await _no_sessions(app)


async def test_answer_hold_unhold_play_and_states(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            states = [call.state]
            assert call.duration == 0
            await call.answer()
            states.append(call.state)
            await call.hold()
            states.append(call.state)
            await asyncio.sleep(0.3)
            await call.unhold()
            states.append(call.state)
            started = time.monotonic()
            playback = await call.play_file("beep")
            await playback
            took = time.monotonic() - started
            assert playback.done
            seen.add("done", (states, took, call.duration, call.direction))

    app = await make_app(configure)
    call = await place_local_call(ari, "1000")
    states, took, duration, direction = await seen.expect("done")
    assert states == [
        CallState.RINGING,
        CallState.IN_PROGRESS,
        CallState.ON_HOLD,
        CallState.IN_PROGRESS,
    ]
    assert 0.1 < took < 3.0  # the beep is about half a second long
    assert duration > 0.3
    assert direction is CallDirection.INBOUND
    await _gone(ari, call.caller_leg)  # the handler returned: the call was hung up
    await _no_sessions(app)


async def test_dtmf_gather_from_the_caller(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            first = await call.listen_dtmf(timeout=10)
            rest = await call.gather(
                max_digits=4, terminator="#", first_digit_timeout=5, inter_digit_timeout=3
            )
            seen.add("digits", (first, rest))

    await make_app(configure)
    await place_local_call(ari, "1000", behaviour="dtmf", variables={"DIGITS": "1234#"})
    assert await seen.expect("digits", timeout=20) == ("1", "234")


async def test_listen_dtmf_times_out_with_none(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            seen.add("digit", await call.listen_dtmf(timeout=0.5))

    await make_app(configure)
    await place_local_call(ari, "1000")
    assert await seen.expect("digit") is None


@pytest.mark.parametrize("wait_kind", ["dtmf", "playback", "gather", "event"])
async def test_caller_hangup_ends_every_wait_promptly(
    make_app: MakeApp, ari: AriClient, wait_kind: str
) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            seen.add("answered")
            started = time.monotonic()
            try:
                if wait_kind == "dtmf":
                    await call.listen_dtmf(timeout=60)
                elif wait_kind == "gather":
                    await call.gather(max_digits=4, first_digit_timeout=60)
                elif wait_kind == "event":
                    from voxtra.ari.events import ChannelTalkingStarted

                    await call.wait_for_event(ChannelTalkingStarted, timeout=60)
                else:
                    await (await call.play_file("demo-congrats")).wait(timeout=60)
            except CallEnded:
                seen.add("ended", time.monotonic() - started)
                raise
            seen.add("returned")

    await make_app(configure)
    call = await place_local_call(ari, "1000")
    await seen.expect("answered")
    await asyncio.sleep(0.3)
    hung_up = time.monotonic()
    await call.hangup()
    waited = await seen.expect("ended")
    assert time.monotonic() - hung_up < 2.0
    assert waited < 5.0


async def test_play_file_on_ended_call_raises_call_ended(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            await call.hangup()
            await call.hangup()  # idempotent
            try:
                await call.play_file("beep")
            except CallEnded as exc:
                seen.add("raised", exc.call_id == call.id)

    await make_app(configure)
    await place_local_call(ari, "1000")
    assert await seen.expect("raised") is True


async def test_hangup_callbacks_fire_once_in_order_despite_failures(
    make_app: MakeApp, ari: AriClient
) -> None:
    seen = Seen()
    fired: list[str] = []

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            @call.on_hangup
            async def first(c: CallSession) -> None:
                fired.append("first")

            @call.on_hangup
            async def broken(c: CallSession) -> None:
                fired.append("broken")
                raise RuntimeError("callback bug")

            @call.on_hangup
            async def last(c: CallSession) -> None:
                fired.append("last")
                seen.add("callbacks", list(fired))

            await call.answer()
            await call.listen_dtmf(timeout=30)

    await make_app(configure)
    call = await place_local_call(ari, "1000")
    await asyncio.sleep(0.5)
    await call.hangup()
    assert await seen.expect("callbacks") == ["first", "broken", "last"]
    await asyncio.sleep(0.5)
    assert fired == ["first", "broken", "last"]


async def test_handler_crash_ends_only_that_call(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="6666")
        async def crashes(call: CallSession) -> None:
            await call.answer()
            raise ValueError("handler bug")

        @app.route(extension="7777")
        async def healthy(call: CallSession) -> None:
            await call.answer()
            seen.add("healthy-answered")
            await asyncio.sleep(1.0)
            await (await call.play_file("beep")).wait()
            seen.add("healthy-done", call.state)

    app = await make_app(configure)
    healthy = await place_local_call(ari, "7777")
    await seen.expect("healthy-answered")
    crashed = await place_local_call(ari, "6666")
    await _gone(ari, crashed.caller_leg)
    assert await seen.expect("healthy-done") is CallState.IN_PROGRESS
    await _gone(ari, healthy.caller_leg)
    await _no_sessions(app)


async def test_fifty_concurrent_calls_with_one_stuck_handler(
    make_app: MakeApp, ari: AriClient
) -> None:
    finished: asyncio.Queue[float] = asyncio.Queue()
    stuck_started = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="1999")
        async def stuck(call: CallSession) -> None:
            await call.answer()
            stuck_started.set()
            await asyncio.Event().wait()  # never returns

        @app.default
        async def normal(call: CallSession) -> None:
            await call.answer()
            await (await call.play_file("beep")).wait(timeout=20)
            finished.put_nowait(time.monotonic())

    app = await make_app(configure, handler_deadline=0.5)
    await place_local_call(ari, "1999")
    await asyncio.wait_for(stuck_started.wait(), 10)
    started = time.monotonic()
    await asyncio.gather(*(place_local_call(ari, str(2000 + n)) for n in range(49)))
    times = [await asyncio.wait_for(finished.get(), 30) for _ in range(49)]
    assert max(times) - started < 20
    assert len(app.active_sessions) >= 1  # the stuck call is still there
    stuck_id = next(s.id for s in app.active_sessions.values() if s.called_number == "1999")
    await app.stop()
    await _gone(ari, stuck_id)
    await _no_sessions(app)


async def test_originate_outcomes(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()
    app = await make_app()

    async def outbound(call: CallSession) -> None:
        seen.add("handler", (call.direction, call.state))
        await (await call.play_file("beep")).wait()

    session = await app.originate(
        "Local/answer@voxtra-test", handler=outbound, metadata={"campaign": "reminders"}, timeout=10
    )
    assert session.direction is CallDirection.OUTBOUND
    assert session.metadata == {"campaign": "reminders"}
    assert await seen.expect("handler") == (CallDirection.OUTBOUND, CallState.IN_PROGRESS)
    await _gone(ari, session.id)

    with pytest.raises(CallBusy) as busy:
        await app.originate("Local/busy@voxtra-test", timeout=10)
    assert busy.value.cause == 17
    with pytest.raises(CallNoAnswer):
        await app.originate("Local/noanswer@voxtra-test", timeout=2)
    with pytest.raises(CallFailed) as congested:
        await app.originate("Local/congestion@voxtra-test", timeout=10)
    assert congested.value.cause in (34, 42)
    with pytest.raises(CallFailed):
        await app.originate("PJSIP/nobody-here", timeout=5)
    await _no_sessions(app)


async def test_originated_local_channel_gets_narrowband_formats(
    make_app: MakeApp, ari: AriClient
) -> None:
    """A Local channel has no peer to negotiate with: originate() gives it 8 kHz slin
    unless told otherwise (left alone, Asterisk resampled every frame of it)."""
    app = await make_app()

    async def hold(call: CallSession) -> None:
        await call.wait_ended(30)

    plain = await app.originate("Local/answer@voxtra-test", handler=hold, timeout=10)
    chosen = await app.originate(
        "Local/answer@voxtra-test", handler=hold, timeout=10, formats="ulaw"
    )
    try:
        assert await ari.channels.get_variable(plain.id, "CHANNEL(audionativeformat)") == "(slin)"
        assert await ari.channels.get_variable(chosen.id, "CHANNEL(audionativeformat)") == "(ulaw)"
    finally:
        for session in (plain, chosen):
            await session.hangup()
    await _no_sessions(app)


async def test_a_sound_asterisk_does_not_have_is_playback_failed(make_app: MakeApp) -> None:
    """Asterisk 22 starts a playback of a sound it does not have and finishes it as
    "failed": awaiting it raises PlaybackFailed naming the sound, and the call goes
    on. A missing sound before the last of a list is passed over (the list plays)."""
    app = await make_app()
    seen: dict[str, object] = {}

    async def play(call: CallSession) -> None:
        with pytest.raises(PlaybackFailed) as failed:
            await call.play_and_wait("voxtra-no-such-sound", timeout=5)
        seen["failed"] = failed.value.media
        playback = await call.play_file(["voxtra-no-such-sound", "beep"])
        await playback.wait(5)
        seen["list"] = playback.done
        with pytest.raises(PlaybackFailed, match="sound:voxtra-not-this-either"):
            await (await call.play_file(["beep", "voxtra-not-this-either"])).wait(5)
        seen["state"] = call.state
        await call.hangup()

    session = await app.originate("Local/answer@voxtra-test", handler=play, timeout=10)
    await session.wait_ended(15)
    await _no_sessions(app)
    assert seen == {
        "failed": "sound:voxtra-no-such-sound",
        "list": True,
        "state": CallState.IN_PROGRESS,
    }


async def test_a_404_about_another_resource_is_not_the_call_ending(make_app: MakeApp) -> None:
    """Asterisk 22 says "Channel not found" or "Provided channel was not found" when a
    call's channel is gone; its 404 for a bridge that is gone is that error on a live
    call, and the call goes on."""
    app = await make_app()
    seen: dict[str, object] = {}

    async def handler(call: CallSession) -> None:
        context = call.context
        with pytest.raises(AriNotFound, match="Bridge not found"):
            await context.request(context.ari.bridges.add_channel("voxtra-no-bridge", call.id))
        seen["alive"] = (call.ended, await call.get_variable("CHANNEL(state)"))
        await call.hangup()
        with pytest.raises(CallEnded):
            await context.request(context.ari.channels.ring(call.id))

    session = await app.originate("Local/answer@voxtra-test", handler=handler, timeout=10)
    await session.wait_ended(10)
    await _no_sessions(app)
    assert seen == {"alive": (False, "Up")}


async def test_an_unset_variable_is_not_the_call_ending(make_app: MakeApp) -> None:
    """Asterisk answers 404 for a variable the channel does not have, as for a channel
    that is gone: the first is VariableNotSet and the call goes on; a function it
    cannot read (PJSIP's Call-ID on a Local channel) is its 500. Once the call is gone,
    the same read is CallEnded."""
    app = await make_app()
    seen: dict[str, object] = {}

    async def read(call: CallSession) -> None:
        await call.set_variable("VOXTRA_SET", "yes")
        seen["set"] = await call.get_variable("VOXTRA_SET")
        with pytest.raises(VariableNotSet) as unset:
            await call.get_variable("VOXTRA_NEVER_SET")
        seen["unset"] = unset.value.name
        with pytest.raises(AriServerError, match="Unable to read provided function"):
            await call.get_variable("CHANNEL(pjsip,call-id)")
        seen["alive"] = (call.ended, await call.get_variable("CHANNEL(state)"))
        await call.hangup()
        with pytest.raises(CallEnded):
            await call.get_variable("VOXTRA_SET")

    session = await app.originate("Local/answer@voxtra-test", handler=read, timeout=10)
    await session.wait_ended(10)
    await _no_sessions(app)
    assert seen == {"set": "yes", "unset": "VOXTRA_NEVER_SET", "alive": (False, "Up")}


async def test_transfer_into_dialplan_and_to_queue(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="1000")
        async def first(call: CallSession) -> None:
            await call.answer()
            await call.transfer_to("transfer-x1@voxtra-test")
            seen.add("transferred", call.transferred)

        @app.route(extension="transfer-x1")
        async def landed(call: CallSession) -> None:
            seen.add("landed", call.args)
            await call.transfer_to_queue("support")

        @app.route(extension="queue-agent")
        async def agent(call: CallSession) -> None:
            seen.add("agent", call.args)
            await call.answer()
            await asyncio.sleep(0.5)

    await make_app(configure)
    caller = await place_local_call(ari, "1000")
    # The landed handler may start before the first one resumes after transfer_to():
    # StasisEnd and the next StasisStart arrive back to back.
    first_two = dict([await seen.next(), await seen.next()])
    assert first_two == {"transferred": True, "landed": ("transfer-x1",)}
    assert await seen.expect("agent", timeout=20) == ("queue-agent",)
    await caller.hangup()


async def test_transfer_to_endpoint_bridges_a_new_leg(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="1000")
        async def first(call: CallSession) -> None:
            await call.answer()
            await call.transfer_to("Local/answer@voxtra-test", timeout=10)
            bridges = await call.app.ari.bridges.list()
            mine = [b for b in bridges if call.id in b.channels]
            seen.add("bridged", [len(b.channels) for b in mine])

    app = await make_app(configure)
    caller = await place_local_call(ari, "1000")
    assert await seen.expect("bridged") == [2]
    assert len(app.active_sessions) == 1  # the internal leg is not a call
    await caller.hangup()
    await asyncio.sleep(1.0)
    await _no_sessions(app)
    # this app's own (ids carry its instance): other runs may share the Asterisk
    assert [b for b in await ari.bridges.list() if app._owns_internal(b.id)] == []
    leftovers = [c for c in await ari.channels.list() if app._owns_internal(c.id)]
    assert leftovers == []


async def test_a_blind_transfer_ends_when_its_target_hangs_up(
    make_app: MakeApp, ari: AriClient
) -> None:
    # Before: the handler's return began a 10 s wait; the target hanging up left the
    # caller alone in Stasis, and at 10 s the app gave up on the call and left it there.
    seen = Seen()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="1000")
        async def first(call: CallSession) -> None:
            await call.answer()
            await call.transfer_to("Local/answer@voxtra-test", timeout=10)
            seen.add("transferred", call.id)

    app = await make_app(configure)
    caller = await place_local_call(ari, "1000")
    await seen.expect("transferred")
    await asyncio.sleep(0.3)  # the handler has returned: both stay up
    legs = [
        c
        for c in await ari.channels.list()
        if app._owns_internal(c.id) and c.name.endswith(";1")  # not the Local's ;2 half
    ]
    assert len(legs) == 1 and len(app.active_sessions) == 1
    await ari.channels.hangup(legs[0].id)  # the transfer's target hangs up
    await _no_sessions(app)
    await _gone(ari, caller.call_id)  # the app hung the caller up
    assert [b for b in await ari.bridges.list() if app._owns_internal(b.id)] == []


async def test_bridge_with_connects_two_calls(make_app: MakeApp, ari: AriClient) -> None:
    seen = Seen()
    waiting: asyncio.Queue[CallSession] = asyncio.Queue()
    bridged = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="1001")
        async def first(call: CallSession) -> None:
            await call.answer()
            waiting.put_nowait(call)
            await bridged.wait()  # returning now would hang up: not yet handed off

        @app.route(extension="1002")
        async def second(call: CallSession) -> None:
            await call.answer()
            other = await waiting.get()
            bridge_id = await call.bridge_with(other)
            bridged.set()
            seen.add("bridge", bridge_id)

    app = await make_app(configure)
    a = await place_local_call(ari, "1001")
    await asyncio.sleep(0.5)
    b = await place_local_call(ari, "1002")
    bridge_id = await seen.expect("bridge")
    bridge = await ari.bridges.get(bridge_id)
    assert set(bridge.channels) == {a.call_id, b.call_id}
    await asyncio.sleep(0.5)
    assert len(app.active_sessions) == 2  # handlers returned; handed to the bridge
    await a.hangup()
    await _gone(ari, b.call_id)  # the other party is hung up once alone
    with pytest.raises(AriNotFound):
        await ari.bridges.get(bridge_id)
    await _no_sessions(app)


async def test_stop_drains_then_hangs_up_and_cleans(make_app: MakeApp, ari: AriClient) -> None:
    started = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            started.set()
            await call.listen_dtmf(timeout=120)

    app = await make_app(configure, handler_deadline=0.5)
    call = await place_local_call(ari, "1000")
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    await app.stop()
    assert time.monotonic() - t0 < 8
    await _gone(ari, call.call_id)
    await _no_sessions(app)


async def test_reconcile_after_asterisk_restart_leaves_no_session(
    make_app: MakeApp, ari: AriClient, asterisk: Any
) -> None:
    hangups: list[str] = []
    started = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            @call.on_hangup
            async def note(c: CallSession) -> None:
                hangups.append(c.id)

            await call.answer()
            started.set()
            await asyncio.Event().wait()

    app = await make_app(configure)
    await place_local_call(ari, "1000")
    await asyncio.wait_for(started.wait(), 10)
    assert len(app.active_sessions) == 1
    assert app._stream is not None
    await asyncio.to_thread(asterisk.restart)
    deadline = time.monotonic() + 30
    while (app.active_sessions or app._stream.generation < 2) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert app._stream.generation >= 2
    await _no_sessions(app)
    await asyncio.sleep(0.3)
    assert len(hangups) == 1
    # and the app still takes calls on the new connection
    seen = Seen()

    async def after(call: CallSession) -> None:
        seen.add("after", call.called_number)

    app.router.set_default(after)
    await place_local_call(ari, "1000")
    assert await seen.expect("after") == "1000"
