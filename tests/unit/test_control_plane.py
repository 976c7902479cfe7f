"""The control plane's per-call path made shorter for issue 15 keeps its behaviour.

Against FakeAsterisk (a whole VoxtraApp, no Asterisk): an inbound handler starts while
its call's instance tag is still on its way (it waited for the tag's round trip), the
tag is still sent before anything the handler sends; a call makes two tasks (the
call, its handler; a teardown task only when the call holds something to release);
the event kinds the app ignores are filtered by
Asterisk, and waiting for one raises instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from fake_apps import fake_app

from voxtra import CallSession, CallState, VoxtraApp
from voxtra.app import INSTANCE_VARIABLE
from voxtra.ari.errors import AriNotFound
from voxtra.ari.events import ChannelDialplan, ChannelVarset
from voxtra.ari.transport import AriRequest, AriResponse
from voxtra.errors import (
    AppNotRunning,
    CallEnded,
    CallNoAnswer,
    ConfigError,
    VariableNotSet,
)
from voxtra.testing import FakeAsterisk, FakeCall

APP = "control-plane-tests"


@pytest.fixture
def app(tmp_path: Path) -> VoxtraApp:
    return fake_app(tmp_path, APP, environ={})


async def test_an_inbound_handler_starts_while_its_instance_tag_is_on_its_way(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    sent: list[str] = []
    answer = fake_asterisk.handle_request

    async def slow_tag(request: AriRequest) -> AriResponse:
        tag = request.params.get("variable") == INSTANCE_VARIABLE
        sent.append("tag" if tag else f"{request.method} {request.path}")
        if tag:
            await release.wait()  # Asterisk slow to answer the tag
        return await answer(request)

    fake_asterisk.handle_request = slow_tag  # type: ignore[method-assign]

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        started.set()
        await call.answer()

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000")
        await asyncio.wait_for(started.wait(), 5)  # before: waited for the tag
        assert not release.is_set()
        release.set()
        await call.wait_until(lambda c: c.state == "Up", timeout=5)
        mine = [s for s in sent if s == "tag" or call.id in s]
        assert mine[:2] == ["tag", f"POST /channels/{call.id}/answer"]


def _count_tasks(made: collections.Counter[str]) -> Any:
    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
    ) -> asyncio.Task[Any]:
        name = coro.__qualname__
        if not name.startswith("FakeAsterisk.") and name != "Condition.wait":  # the fake's
            made[name] += 1
        return asyncio.Task(coro, loop=loop, **kw)

    return factory


async def test_a_call_makes_two_tasks(fake_asterisk: FakeAsterisk, app: VoxtraApp) -> None:
    # The call's task and its handler's. There were three more for an originated call
    # (waiting tasks for its task group and the end) and one more for an inbound one,
    # then (session 4) a teardown task for every call, which a call holding nothing
    # to release does not need: each a task to make and loop passes to run it.
    made: collections.Counter[str] = collections.Counter()

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.hangup()

    app.route("1000")(handler)
    async with fake_asterisk.serve(app):
        loop = asyncio.get_running_loop()
        loop.set_task_factory(_count_tasks(made))  # type: ignore[arg-type]
        try:
            for _ in range(3):
                session = await app.originate("Local/100@test", handler=handler)
                await session.wait_ended(timeout=5)
            await fake_asterisk.wait_until(
                lambda: app.calls_handled == 3 and not app.active_sessions
            )
            await asyncio.sleep(0.05)  # the last teardown
            out = dict(made)
            made.clear()
            for _ in range(3):
                await fake_asterisk.incoming(extension="1000")
            await fake_asterisk.wait_until(
                lambda: app.calls_handled == 6 and not app.active_sessions
            )
            await asyncio.sleep(0.05)  # the last teardowns
        finally:
            loop.set_task_factory(None)
    expected = {"VoxtraApp._run_call": 3, "VoxtraApp._run_handler": 3}
    assert out == expected
    assert dict(made) == expected


async def test_a_call_holding_something_is_torn_down_in_its_own_task(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # A hangup callback (or a channel, bridge, cleanup, task) still gets the teardown
    # task stop() knows of (the call's finish: its teardown, then its on_call_end
    # hooks), and the callback runs once.
    made: collections.Counter[str] = collections.Counter()
    fired: list[str] = []

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        async def bye(ended: CallSession) -> None:
            fired.append(ended.id)

        call.on_hangup(bye)
        await call.answer()
        await call.hangup()

    async with fake_asterisk.serve(app):
        loop = asyncio.get_running_loop()
        loop.set_task_factory(_count_tasks(made))  # type: ignore[arg-type]
        try:
            call = await fake_asterisk.incoming(extension="1000")
            await fake_asterisk.wait_until(
                lambda: app.calls_handled == 1 and not app.active_sessions
            )
            await asyncio.sleep(0.05)
        finally:
            loop.set_task_factory(None)
    assert made["VoxtraApp._finish_call"] == 1
    assert fired == [call.id]


async def test_ignored_event_kinds_are_filtered_and_cannot_be_waited_for(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    refused: list[BaseException] = []
    done = asyncio.Event()

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        for kind in (ChannelVarset, ChannelDialplan):
            try:
                await call.wait_for_event(kind, timeout=5)
            except ConfigError as exc:
                refused.append(exc)
        done.set()

    async with fake_asterisk.serve(app):
        assert app.ignored_events == ("ChannelVarset", "ChannelDialplan")  # the default
        info = await app.ari.applications.get(APP)
        assert {e["type"] for e in info.events_disallowed or ()} == set(app.ignored_events)
        await fake_asterisk.incoming(extension="1000")
        await asyncio.wait_for(done.wait(), 5)
    assert len(refused) == 2 and "ignored_events" in str(refused[0])
    # The tag's ChannelVarset (VOXTRA_INSTANCE) never reached the app.
    assert not any(e["type"] == "ChannelVarset" for e in fake_asterisk.events)


async def test_an_app_that_ignores_nothing_can_wait_for_every_kind(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    app.ignored_events = ()
    seen: list[str] = []

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        waiting = asyncio.ensure_future(
            call.wait_for_event(ChannelVarset, lambda e: e.variable == "COLOUR", timeout=5)
        )
        await asyncio.sleep(0)
        await call.set_variable("COLOUR", "blue")
        seen.append((await waiting).value)

    async with fake_asterisk.serve(app):
        info = await app.ari.applications.get(APP)
        assert not info.events_disallowed
        call = await fake_asterisk.incoming(extension="1000")
        await fake_asterisk.wait_until(lambda: bool(seen))
        assert call.id
    assert seen == ["blue"]


async def test_an_unset_variable_leaves_the_call_going(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # Asterisk's 404 for a variable the channel lacks is not its 404 for a channel
    # that is gone: VariableNotSet, and the handler goes on (it used to get CallEnded).
    seen: list[object] = []

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        try:
            await call.get_variable("LANGUAGE_CHOSEN")
        except VariableNotSet as exc:
            seen.append((exc.name, isinstance(exc, LookupError), call.ended))
        await call.answer()
        seen.append(call.state)
        await call.hangup()

    await _call_through(fake_asterisk, app)
    assert seen == [("LANGUAGE_CHOSEN", True, False), CallState.IN_PROGRESS]


async def test_only_a_404_about_the_channel_ends_the_call(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # A call's request answered 404 for something else (a bridge that is gone) is that
    # error, the call going on; once the channel is gone, the same request is CallEnded.
    seen: list[object] = []

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        context = call.context
        with pytest.raises(AriNotFound, match="Bridge not found"):
            await context.request(context.ari.bridges.add_channel("no-such-bridge", call.id))
        seen.append(call.ended)
        await call.answer()
        await call.hangup()
        with pytest.raises(CallEnded):
            await context.request(context.ari.channels.answer(call.id))
        seen.append(call.ended)

    await _call_through(fake_asterisk, app)
    assert seen == [False, True]


async def test_dtmf_that_cannot_be_sent_is_a_config_error(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # Asterisk takes any string with 204 and passes over what it cannot send: the
    # mistake is named before anything goes, and what can be sent goes.
    errors: list[str] = []

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        await call.answer()
        for digits, kwargs in (("12x#", {}), ("", {}), ("1", {"duration_ms": -5})):
            with pytest.raises(ConfigError) as wrong:
                await call.send_dtmf(digits, **kwargs)
            errors.append(str(wrong.value))
        await call.send_dtmf("1w2W*#aDf")
        await call.hangup()

    caller = await _call_through(fake_asterisk, app)
    assert "'x' cannot be sent as DTMF" in errors[0]
    assert "at least one digit" in errors[1] and "negative" in errors[2]
    assert caller.dtmf_sent == "1w2W*#aDf"


async def test_a_gather_that_could_never_collect_is_a_config_error(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # No digit wanted, a terminator no keypad has, a timeout that is over at once: each
    # returned "" at once before, as if the caller had pressed nothing.
    errors: list[str] = []
    got: list[str] = []

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        await call.answer()
        for kwargs in (
            {"max_digits": 0},
            {"terminator": "##"},
            {"terminator": "x"},
            {"first_digit_timeout": 0},
            {"inter_digit_timeout": -1},
        ):
            with pytest.raises(ConfigError) as wrong:
                await call.gather(**{"max_digits": 4, **kwargs})
            errors.append(str(wrong.value))
        got.append(await call.gather(4, terminator="*", first_digit_timeout=5))
        got.append(await call.gather(2, terminator=None, first_digit_timeout=5))
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await caller.wait_answered()
        await caller.press("12*34")
        await caller.wait_ended()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
    assert len(errors) == 5 and all(e.startswith("gather(): ") for e in errors)
    assert "'x' is not a key" in errors[2] and "positive" in errors[3]
    assert got == ["12", "34"]


async def test_events_about_a_channel_no_call_owns_are_skipped_unparsed(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # A channel the app is subscribed to but no call of it owns (a Local channel's ;2
    # half against Asterisk): its events are dropped before parsing; a call's own
    # events still reach it (the handler sees its caller hang up).
    ended = asyncio.Event()

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.wait_ended(timeout=5)
        ended.set()

    async with fake_asterisk.serve(app):
        stream = app._stream
        assert stream is not None
        stranger = await app.ari.channels.create("PJSIP/stranger", app="someone-else")
        await app.ari.applications.subscribe(APP, f"channel:{stranger.id}")
        skipped = stream.events_skipped
        fake_asterisk.caller_hangs_up(fake_asterisk.call(stranger.id))
        await fake_asterisk.wait_until(lambda: stranger.id not in fake_asterisk.channels)
        call = await fake_asterisk.incoming(extension="1000")
        await call.wait_until(lambda c: c.state == "Up", timeout=5)
        fake_asterisk.caller_hangs_up(call)
        await asyncio.wait_for(ended.wait(), 5)
    kinds = [
        e["type"]
        for e in fake_asterisk.events
        if e.get("channel", {}).get("id") == stranger.id and e["application"] == APP
    ]
    assert "ChannelDestroyed" in kinds and "ChannelHangupRequest" in kinds
    assert stream.events_skipped - skipped == len(kinds)


async def test_an_originate_never_answered_raises_no_answer_and_hangs_up(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # originate() waits timeout + 5 s for the answer (now a timer on its future, not
    # wait_for): timeout=-5 makes that wait end at once.
    fake_asterisk.dial_outcome = "ring"  # rings until the test acts
    async with fake_asterisk.serve(app):
        with pytest.raises(CallNoAnswer, match="not answered within"):
            await app.originate("PJSIP/bob", timeout=-5, channel_id="never-answered")
        await fake_asterisk.wait_until(lambda: "never-answered" not in fake_asterisk.channels)
        assert not app.registry.originates


async def test_a_cancelled_originate_hangs_the_ringing_channel_up(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # A caller that gives up on originate() (wait_for, a stopping worker) left the phone
    # ringing; answered, the channel came in as a new inbound call to the routes.
    fake_asterisk.dial_outcome = "ring"
    async with fake_asterisk.serve(app):
        placing = asyncio.create_task(app.originate("PJSIP/bob", channel_id="given-up"))
        await fake_asterisk.wait_until(lambda: "given-up" in fake_asterisk.channels)
        placing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await placing
        await fake_asterisk.wait_until(lambda: "given-up" not in fake_asterisk.channels)
        assert not app.registry.originates
        assert not app.active_sessions


async def test_originate_on_an_app_not_running_says_so(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    with pytest.raises(AppNotRunning, match="call start"):
        await app.originate("PJSIP/bob")
    release = asyncio.Event()

    async def busy(call: CallSession) -> None:
        await release.wait()

    async with fake_asterisk.serve(app):
        await app.originate("PJSIP/bob", handler=busy)
        stopping = asyncio.create_task(app.stop(deadline=5))
        await asyncio.sleep(0.05)  # stop() waits for the call's handler
        with pytest.raises(AppNotRunning, match="stopping"):
            await app.originate("PJSIP/carol")
        release.set()
        await stopping
    assert [c.endpoint for c in fake_asterisk.originated] == ["PJSIP/bob"]


def _tags_sent(fake: FakeAsterisk) -> list[str]:
    sent: list[str] = []
    answer = fake.handle_request

    async def spy(request: AriRequest) -> AriResponse:
        if request.params.get("variable") == INSTANCE_VARIABLE:
            sent.append(request.path.split("/")[2])
        return await answer(request)

    fake.handle_request = spy  # type: ignore[method-assign]
    return sent


async def test_a_dialplan_tagged_call_costs_no_tag_request(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    # instance_tag_in_dialplan: the app publishes VOXTRA_INSTANCE_<app> at start for the
    # dialplan's Set(); without channel variables in events the dialplan is trusted.
    app.instance_tag_in_dialplan = True
    sent = _tags_sent(fake_asterisk)
    app.route("1000")(_answer_and_hang_up)
    async with fake_asterisk.serve(app):
        published = await app.ari.asterisk.get_variable(f"VOXTRA_INSTANCE_{APP}")
        await _one_call(fake_asterisk, app, {INSTANCE_VARIABLE: published})
    assert published == app.instance_id
    assert sent == []


async def test_a_call_shown_without_this_instances_tag_is_still_tagged(app: VoxtraApp) -> None:
    # Asterisk shows VOXTRA_INSTANCE in events (ari.conf channelvars): a call whose
    # dialplan did not tag it, or tagged it for another instance, is tagged by a request.
    fake = FakeAsterisk(channelvars=[INSTANCE_VARIABLE])
    app.instance_tag_in_dialplan = True
    sent = _tags_sent(fake)
    app.route("1000")(_answer_and_hang_up)
    try:
        async with fake.serve(app):
            mine = await _one_call(fake, app, {INSTANCE_VARIABLE: app.instance_id})
            other = await _one_call(fake, app, {INSTANCE_VARIABLE: "someone-else"})
            bare = await _one_call(fake, app, {})
    finally:
        await fake.aclose()
    assert mine not in sent and sent == [other, bare]


async def test_the_tag_request_stays_the_default(
    fake_asterisk: FakeAsterisk, app: VoxtraApp
) -> None:
    sent = _tags_sent(fake_asterisk)
    app.route("1000")(_answer_and_hang_up)
    async with fake_asterisk.serve(app):
        call_id = await _one_call(fake_asterisk, app, {INSTANCE_VARIABLE: app.instance_id})
    assert f"VOXTRA_INSTANCE_{APP}" not in fake_asterisk.global_variables
    assert sent == [call_id]


async def _answer_and_hang_up(call: CallSession) -> None:
    await call.answer()
    await call.hangup()


async def _call_through(fake: FakeAsterisk, app: VoxtraApp) -> FakeCall:
    """One call to 1000 through ``app`` on ``fake``, until the app is done with it (the
    handler hangs up)."""
    async with fake.serve(app):
        caller = await fake.incoming(extension="1000")
        await caller.wait_ended()
        await fake.wait_until(lambda: not app.active_sessions)
    return caller


async def _one_call(fake: FakeAsterisk, app: VoxtraApp, variables: dict[str, str]) -> str:
    handled = app.calls_handled
    call = await fake.incoming(extension="1000", variables=variables)
    await fake.wait_until(lambda: app.calls_handled == handled + 1 and not app.active_sessions)
    await asyncio.sleep(0.01)  # the tag, if any, is sent beside the handler
    return call.id
