"""The call kernel through a whole app, with no Asterisk: FakeAsterisk as the transport.

What the kernel owes: events reach only the call they concern (the registry), a call's
helpers live and die in its task group, everything a call made is released by its
one teardown (nothing left in "Asterisk", nothing left in the registry), bridged calls
end together, and ``call.called_number`` is the number its route matched.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apps import fake_app

from voxtra import CallEndReason, CallSession, CallState, PlaybackFailed, VoxtraApp
from voxtra.ari.transport import AriRequest, AriResponse
from voxtra.routing import CallInfo
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., VoxtraApp]:
    return functools.partial(fake_app, tmp_path, "kernel-tests")


def _nothing_left(app: VoxtraApp, fake: FakeAsterisk) -> None:
    assert app.active_sessions == {}
    assert len(app.registry) == 0
    assert app.registry.internal == {} and app.registry.bridges == {}
    assert fake.bridges == {}
    assert [c for c in fake.channels.values() if not c.ended] == []


async def test_playback_events_reach_only_their_own_call(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    finished: dict[str, list[str]] = {}
    release = asyncio.Event()

    @app.route("1000")
    async def play(call: CallSession) -> None:
        await call.answer()
        playback = await call.play_file(f"sound:for-{call.caller_id}")
        await playback.wait(timeout=5)
        finished.setdefault(call.caller_id, []).append(playback.media)
        await release.wait()

    async with fake_asterisk.serve(app):
        a = await fake_asterisk.incoming(extension="1000", caller="111")
        b = await fake_asterisk.incoming(extension="1000", caller="222")
        await fake_asterisk.wait_until(lambda: len(finished) == 2)
        release.set()
        await a.wait_ended()
        await b.wait_ended()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        _nothing_left(app, fake_asterisk)
    assert finished == {"111": ["sound:for-111"], "222": ["sound:for-222"]}


async def test_a_sound_the_server_lacks_is_playback_failed_and_the_call_goes_on(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    fake_asterisk.missing_media = {"sound:menu-typo"}
    seen: list[object] = []

    @app.route("1000")
    async def menu(call: CallSession) -> None:
        await call.answer()
        try:
            await call.play_and_wait("menu-typo", timeout=5)
        except PlaybackFailed as exc:
            seen.append((exc.media, exc.call_id == call.id))
        await call.play_and_wait("menu-main", timeout=5)  # the call goes on
        seen.append(call.state)
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await caller.wait_ended()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        _nothing_left(app, fake_asterisk)
    assert seen == [("sound:menu-typo", True), CallState.IN_PROGRESS]
    assert caller.played == ["sound:menu-typo", "sound:menu-main"]


async def test_a_calls_helpers_are_cancelled_with_it_and_teardown_releases_everything(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    helper_cancelled = asyncio.Event()
    hangup_callbacks: list[CallEndReason | None] = []

    @app.route("2000")
    async def busy(call: CallSession) -> None:
        await call.answer()
        await call.media()  # a bridge, an ExternalMedia channel, an RTP transport

        async def helper() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                helper_cancelled.set()
                raise

        call.spawn(helper())

        @call.on_hangup
        async def done(c: CallSession) -> None:
            hangup_callbacks.append(c.end_reason)

        await call.wait_ended()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="2000")
        await fake_asterisk.wait_until(lambda: bool(app.registry.internal))
        media_channel = next(iter(app.registry.internal))
        assert media_channel.startswith("voxtra-internal-media-unit-")
        await caller.hang_up()
        await asyncio.wait_for(helper_cancelled.wait(), 5)
        await fake_asterisk.wait_until(lambda: bool(hangup_callbacks))
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        assert ("DELETE", f"/channels/{media_channel}") in fake_asterisk.requests
        _nothing_left(app, fake_asterisk)
    assert hangup_callbacks == [CallEndReason.REMOTE]


@pytest.mark.parametrize("still_busy", [False, True])
async def test_bridged_calls_end_together(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp], still_busy: bool
) -> None:
    # still_busy: the first handler still runs (a CRM write after the bridge) when the
    # other party hangs up. Its call was then never hung up: the peer was hung up only
    # if its handler had returned, and the app waited for its end without a limit.
    app = make_app()
    waiting: list[CallSession] = []
    bridged, written = asyncio.Event(), asyncio.Event()
    if not still_busy:
        written.set()

    @app.route("3000")
    async def first(call: CallSession) -> None:
        await call.answer()
        waiting.append(call)
        await bridged.wait()  # returns once handed to the bridge: not hung up then
        await written.wait()

    @app.route("3001")
    async def second(call: CallSession) -> None:
        await call.answer()
        await fake_asterisk.wait_until(lambda: bool(waiting))
        await call.bridge_with(waiting[0])
        bridged.set()

    async with fake_asterisk.serve(app):
        a = await fake_asterisk.incoming(extension="3000", caller="a")
        b = await fake_asterisk.incoming(extension="3001", caller="b")
        await asyncio.wait_for(bridged.wait(), 5)
        await asyncio.sleep(0.05)  # the handlers that could return have: the bridge holds
        assert not a.ended and not b.ended
        await b.hang_up()
        if still_busy:
            await fake_asterisk.wait_until(lambda: len(app.active_sessions) == 1)
            assert not a.ended  # its handler runs on
            written.set()
        await asyncio.wait_for(a.wait_ended(), 5)  # the peer is hung up
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        _nothing_left(app, fake_asterisk)


async def test_called_number_is_the_number_the_route_matched(
    make_app: Callable[..., VoxtraApp],
) -> None:
    # ARI shows a channel's variables in events when ari.conf's channelvars lists them
    fake_asterisk = FakeAsterisk(channelvars=["VOXTRA_CALLED_NUMBER", "VOXTRA_DID"])
    app = make_app()
    seen: list[tuple[str, str | None]] = []

    @app.dispatcher
    async def pick(info: CallInfo) -> object:
        seen.append(("route", info.called_number))
        return None

    @app.default
    async def handler(call: CallSession) -> None:
        seen.append(("call", call.called_number))

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(
            extension="s", variables={"VOXTRA_CALLED_NUMBER": "+4930555"}
        )
        await call.wait_ended()
    assert seen == [("route", "+4930555"), ("call", "+4930555")]


async def test_max_call_duration_hangs_up_from_the_calls_task_group(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app(max_call_duration=0.2)
    reasons: list[CallEndReason | None] = []

    @app.route("4000")
    async def forever(call: CallSession) -> None:
        await call.answer()
        try:
            await call.wait_ended()
        finally:
            reasons.append(call.end_reason)

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="4000")
        await call.wait_ended()
        await fake_asterisk.wait_until(lambda: bool(reasons))
    assert reasons == [CallEndReason.MAX_DURATION]


async def test_stop_hangs_up_a_running_call_and_runs_its_teardown(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    fired: list[CallEndReason | None] = []

    @app.route("5000")
    async def forever(call: CallSession) -> None:
        await call.answer()

        @call.on_hangup
        async def done(c: CallSession) -> None:
            fired.append(c.end_reason)

        await asyncio.Event().wait()  # ignores the hang-up: cancelled after the grace

    app.hangup_grace = 0.05
    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="5000")
        await call.wait_answered()
        await app.stop(deadline=0.05)
        assert call.ended
        _nothing_left(app, fake_asterisk)
    assert fired == [CallEndReason.SHUTDOWN]


async def test_call_start_and_end_hooks_see_each_call_once(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    seen: list[tuple[str, str, CallEndReason | None]] = []

    @app.on_call_start
    async def started(call: CallSession) -> None:
        seen.append(("start", call.called_number, call.end_reason))

    @app.on_call_end
    async def ended(call: CallSession) -> None:
        seen.append(("end", call.called_number, call.end_reason))
        raise RuntimeError("an observer's bug ends nothing")

    @app.route("6000")
    async def answer(call: CallSession) -> None:
        seen.append(("handler", call.called_number, None))
        await call.answer()

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="6000")
        await call.wait_ended()
        await fake_asterisk.wait_until(lambda: len(seen) == 3)
        outbound = await app.originate("PJSIP/bob", timeout=5)
        await outbound.hangup()
        await fake_asterisk.wait_until(lambda: len(seen) == 5)
    assert seen == [
        ("start", "6000", None),
        ("handler", "6000", None),
        ("end", "6000", CallEndReason.HANGUP),
        ("start", "bob", None),
        ("end", "bob", CallEndReason.HANGUP),
    ]


async def test_a_conversation_engine_replaces_the_pipeline(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    """VoiceConfig(engine=...): say() reaches the engine; no STT/LLM/TTS needed."""
    from contextlib import asynccontextmanager
    from typing import Any

    from voxtra import VoiceConfig
    from voxtra.pipeline.events import SayResult

    spoken: list[str] = []
    built: list[str | None] = []

    class EchoEngine:
        def __init__(self, config: VoiceConfig) -> None:
            built.append(config.system_prompt)

        @asynccontextmanager
        async def attach(self, media: Any, *, clock: Any = None, call_id: str = "") -> Any:
            yield self

        async def say(self, text: str, *, interruptible: bool = True) -> SayResult:
            spoken.append(text)
            return SayResult(interrupted=False, heard_text=text, played_ms=0.0)

    app = make_app(voice=VoiceConfig(engine=EchoEngine, system_prompt="be brief"))  # type: ignore[arg-type]

    @app.route("7000")
    async def talk(call: CallSession) -> None:
        await call.answer()
        assert call.pipeline is None  # not the STT -> LLM -> TTS kind
        await call.say("hello from the engine")

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="7000")
        await call.wait_ended(timeout=10)
    assert built == ["be brief"] and spoken == ["hello from the engine"]


async def test_on_ringing_is_called_once_when_the_far_end_rings(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    rang: list[str] = []
    fake_asterisk.dial_outcome = "ring"
    async with fake_asterisk.serve(app):
        placing = asyncio.ensure_future(
            app.originate("PJSIP/bob", timeout=5, on_ringing=lambda: rang.append("ringing"))
        )
        await fake_asterisk.wait_until(lambda: bool(fake_asterisk.originated))
        far = fake_asterisk.originated[0]
        await fake_asterisk.wait_until(lambda: bool(rang))
        await far.answer()
        session = await placing
        await session.hangup()
    assert rang == ["ringing"]


@pytest.mark.parametrize("first_to_leave", ["target", "caller"])
async def test_a_blind_transfer_to_an_endpoint_lasts_until_a_party_hangs_up(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp], first_to_leave: str
) -> None:
    # Before: the handler's return started a 10 s wait for the call's end; the target
    # hanging up left the caller alone, and at 10 s the app gave up on the call.
    app = make_app()

    @app.route("5000")
    async def transfer(call: CallSession) -> None:
        await call.answer()
        await call.transfer_to("PJSIP/agent")

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="5000")
        await fake_asterisk.wait_until(
            lambda: any(
                c.endpoint == "PJSIP/agent" and c.state == "Up" for c in fake_asterisk.originated
            )
        )
        leg = fake_asterisk.originated[-1]
        await asyncio.sleep(0.05)  # the handler has returned; nobody hung up
        assert not caller.ended and not leg.ended
        leaving, staying = (leg, caller) if first_to_leave == "target" else (caller, leg)
        await leaving.hang_up()
        await asyncio.wait_for(staying.wait_ended(), 5)  # hung up by the app
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        _nothing_left(app, fake_asterisk)


async def test_an_originated_call_that_hangs_up_as_it_answers_ends(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    # StasisStart, then the hang-up in the same read: both handled before originate()
    # resumed and made the session, so the session never learnt its call had ended.
    app = make_app()
    fake_asterisk.dial_outcome = "ring"
    async with fake_asterisk.serve(app):
        placing = asyncio.create_task(app.originate("PJSIP/bob"))
        await fake_asterisk.wait_until(
            lambda: bool(fake_asterisk.originated) and fake_asterisk.originated[0].ringing
        )
        leg = fake_asterisk.originated[0]
        fake_asterisk.far_end_answers(leg)
        fake_asterisk.caller_hangs_up(leg)
        session = await asyncio.wait_for(placing, 5)
        await session.wait_ended(timeout=5)
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        _nothing_left(app, fake_asterisk)


def _refuse_the_first_bridge_destroy(fake: FakeAsterisk) -> list[str]:
    """Asterisk answers the first ``DELETE /bridges/...`` with a 500 (the bridge stays);
    the list the refused paths go in."""
    refused: list[str] = []
    serve_request = fake.handle_request

    async def refuse(request: AriRequest) -> AriResponse:
        if request.method == "DELETE" and request.path.startswith("/bridges/") and not refused:
            refused.append(request.path)
            return AriResponse(500, b'{"message": "Internal Server Error"}', "Internal Error")
        return await serve_request(request)

    fake.handle_request = refuse  # type: ignore[method-assign]
    return refused


async def test_a_bridge_whose_destroy_failed_at_teardown_is_destroyed_when_the_app_stops(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    """The teardown's destroy of the call's media bridge failed (a 500): the bridge is
    still in Asterisk. The call ended, so nothing of it would try again; the app's stop
    sweeps what is left. It used to forget the bridge with the call: left in Asterisk."""
    app = make_app()
    refused = _refuse_the_first_bridge_destroy(fake_asterisk)

    @app.route("2000")
    async def media(call: CallSession) -> None:
        await call.answer()
        await call.media()  # a bridge, an ExternalMedia channel
        await call.wait_ended()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="2000")
        await fake_asterisk.wait_until(lambda: bool(app.registry.internal))
        await caller.hang_up()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        assert len(refused) == 1 and list(fake_asterisk.bridges) == [
            refused[0].removeprefix("/bridges/")
        ]
    assert fake_asterisk.bridges == {}
    assert app.registry.bridges == {}


async def test_a_bridge_whose_destroy_failed_at_teardown_is_destroyed_by_the_next_reconcile(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    """As above, but the events reconnect before the app stops: the reconcile's listing
    finds the bridge that no live call owns, and destroys it after the grace."""
    app = make_app()
    app.reconcile_grace = 0.2
    refused = _refuse_the_first_bridge_destroy(fake_asterisk)

    @app.route("2000")
    async def media(call: CallSession) -> None:
        await call.answer()
        await call.media()
        await call.wait_ended()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="2000")
        await fake_asterisk.wait_until(lambda: bool(app.registry.internal))
        await caller.hang_up()
        await fake_asterisk.wait_until(lambda: not app.active_sessions and bool(refused))
        assert len(fake_asterisk.bridges) == 1
        fake_asterisk.disconnect_events()
        await fake_asterisk.wait_until(lambda: not fake_asterisk.bridges, timeout=5)
        assert app.registry.bridges == {}
