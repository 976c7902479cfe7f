"""A media attach that fails leaves nothing behind, and the next ``call.media()`` starts
again from scratch, through a whole app on FakeAsterisk.

What failed before: the first attach was marked done before it ran. After one error
(a 500 on a bridge add, on the ExternalMedia request), the next ``media()`` either gave
a transport whose channel was not in the bridge (no audio, no error) or raised
CallEnded on a live call; ``say()``, ``listen()`` and ``connect()`` go through it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_apps import fake_app
from garbage import collector_off, cyclic_garbage

from voxtra import CallSession, VoxtraApp
from voxtra.ari.errors import AriServerError
from voxtra.ari.transport import AriRequest, AriResponse
from voxtra.calls.media import CallMedia
from voxtra.media.engine_transport import EngineTransport
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.rtp_transport import RtpTransport
from voxtra.media.transport import MediaTransport
from voxtra.testing import FakeAsterisk, FakeCall

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

MEDIA_PREFIX = "voxtra-internal-media-"
"""How the ids of the app's ExternalMedia channels (and media bridges) begin."""

Matcher = Callable[[AriRequest], bool]


def _adds_media_channel(request: AriRequest) -> bool:
    channel = request.params.get("channel", "")
    return request.path.endswith("/addChannel") and channel.startswith(MEDIA_PREFIX)


def _creates_external_media(request: AriRequest) -> bool:
    return request.path == "/channels/externalMedia"


def _adds_caller(request: AriRequest) -> bool:
    return request.path.endswith("/addChannel") and not _adds_media_channel(request)


FAILURES: dict[str, Matcher] = {
    "media channel's bridge add": _adds_media_channel,
    "ExternalMedia creation": _creates_external_media,
    "caller's bridge add": _adds_caller,
}


def _fail_once(fake: FakeAsterisk, matches: Matcher) -> list[AriRequest]:
    """Answer the first request ``matches`` accepts with a 500, as a transient fault of
    Asterisk would (nothing done); every other request as the fake does. Returns the
    requests failed so far."""
    failed: list[AriRequest] = []
    answer = fake.handle_request

    async def flaky(request: AriRequest) -> AriResponse:
        if not failed and matches(request):
            failed.append(request)
            # Answered after a turn of the loop, as over a network: the fake answers at
            # once, and an attach failing without a pause would have no waiters.
            await asyncio.sleep(0)
            body = json.dumps({"message": "Internal Server Error"}).encode()
            return AriResponse(500, body, "Internal Server Error")
        return await answer(request)

    fake.handle_request = flaky  # type: ignore[method-assign]
    return failed


def _media_channels(fake: FakeAsterisk) -> list[str]:
    """The live ExternalMedia channels of the fake."""
    return [c.id for c in fake.channels.values() if c.kind == "external" and not c.ended]


def _streams(transport: MediaTransport) -> int:
    """Calls on the shared socket ``transport`` is on (engine rows, or endpoint members)."""
    if isinstance(transport, EngineTransport):
        return len(transport.hub.engine)
    assert isinstance(transport, RtpTransport) and transport.endpoint is not None
    return len(transport.endpoint)


def _nothing_left(app: VoxtraApp, fake: FakeAsterisk) -> None:
    assert app.active_sessions == {}
    assert app.registry.internal == {} and app.registry.bridges == {}
    assert fake.bridges == {}
    assert [c for c in fake.channels.values() if not c.ended] == []


async def _serve_one_call(
    fake: FakeAsterisk,
    app: VoxtraApp,
    check: Callable[[FakeCall], Awaitable[None]],
) -> None:
    """One call to 1000 on ``fake``; ``check(caller)`` once the handler attached its
    media; then the caller hangs up and the app must have released everything."""
    async with fake.serve(app):
        caller = await fake.incoming(extension="1000")
        await check(caller)
        await caller.hang_up()
        await fake.wait_until(lambda: not app.active_sessions)
        _nothing_left(app, fake)


@pytest.mark.parametrize(
    ("failure", "engine"),
    [
        ("media channel's bridge add", True),
        ("media channel's bridge add", False),
        ("ExternalMedia creation", True),
        ("caller's bridge add", True),
    ],
)
async def test_after_a_failed_attach_the_next_media_call_attaches_anew(
    fake_asterisk: FakeAsterisk, tmp_path: Path, failure: str, engine: bool
) -> None:
    fake = fake_asterisk
    app = fake_app(tmp_path, "media-attach-tests", media={"engine": engine})
    failed = _fail_once(fake, FAILURES[failure])
    seen: dict[str, Any] = {}
    heard: set[bytes] = set()
    attached = asyncio.Event()

    @app.route("1000")
    async def talk(call: CallSession) -> None:
        await call.answer()
        try:
            await call.media()
        except Exception as exc:
            seen["error"] = exc
        # What the failed attach left: no ExternalMedia channel, no media bridge.
        seen["ended"] = call.ended
        seen["channels left"] = _media_channels(fake)
        seen["bridges left"] = [b for b in fake.bridges if b.startswith(MEDIA_PREFIX)]
        transport = await call.media()
        seen["transport"] = transport
        seen["streams"] = _streams(transport)
        attached.set()
        async for chunk in call.audio_stream():
            heard.add(chunk.data[:1])
            await call.send_audio(AudioChunk(b"\x11" * 160, 8000, Codec.ULAW))

    async def check(caller: FakeCall) -> None:
        await asyncio.wait_for(attached.wait(), 5)
        assert len(failed) == 1
        assert isinstance(seen["error"], AriServerError)
        assert seen["ended"] is False
        assert seen["channels left"] == [] and seen["bridges left"] == []
        # The second attach: its channel in the bridge with the caller, its transport
        # sending to the channel's RTP address, the only stream on the socket.
        (channel_id,) = _media_channels(fake)
        (bridge,) = [b for b in fake.bridges.values() if b.id.startswith(MEDIA_PREFIX)]
        assert sorted(bridge.channels) == sorted([caller.id, channel_id])
        transport = seen["transport"]
        port = int(fake.channels[channel_id].variables["UNICASTRTP_LOCAL_PORT"])
        assert transport.remote is not None and transport.remote[1] == port
        assert not transport.closed and seen["streams"] == 1
        # And audio flows both ways.
        caller.send_audio(b"\x0a" * 1600)
        await fake.wait_until(lambda: b"\x0a" in heard and b"\x11" in caller.audio_heard)

    await _serve_one_call(fake, app, check)


@pytest.mark.parametrize("failure", ["media channel's bridge add", "ExternalMedia creation"])
async def test_callers_waiting_on_a_failed_attach_get_its_error(
    fake_asterisk: FakeAsterisk, tmp_path: Path, failure: str
) -> None:
    fake = fake_asterisk
    app = fake_app(tmp_path, "media-attach-tests")
    _fail_once(fake, FAILURES[failure])
    seen: dict[str, Any] = {}
    attached = asyncio.Event()

    @app.route("1000")
    async def talk(call: CallSession) -> None:
        await call.answer()
        # say() and listen() at once: both wait on the one attach, both hear its error.
        seen["outcomes"] = await asyncio.gather(call.media(), call.media(), return_exceptions=True)
        seen["channels left"] = _media_channels(fake)
        seen["transport"] = await call.media()
        attached.set()
        await call.wait_ended()

    async def check(caller: FakeCall) -> None:
        await asyncio.wait_for(attached.wait(), 5)
        first, second = seen["outcomes"]
        assert isinstance(first, AriServerError) and second is first
        assert seen["channels left"] == []
        (channel_id,) = _media_channels(fake)
        assert fake.channels[channel_id].bridge_id is not None
        assert caller.bridge_id == fake.channels[channel_id].bridge_id

    await _serve_one_call(fake, app, check)


async def test_a_caller_waiting_on_a_cancelled_attach_attaches_anew(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # The caller that was attaching is cancelled (a say() under a timeout), not failed:
    # one waiting for its transport attaches one of its own instead of giving up.
    fake = fake_asterisk
    app = fake_app(tmp_path, "media-attach-tests")
    held = asyncio.Event()
    answer = fake.handle_request

    async def slow(request: AriRequest) -> AriResponse:
        if _adds_media_channel(request) and not held.is_set():
            held.set()
            await asyncio.Event().wait()  # until the attach is cancelled
        return await answer(request)

    fake.handle_request = slow  # type: ignore[method-assign]
    seen: dict[str, Any] = {}
    attached = asyncio.Event()

    @app.route("1000")
    async def talk(call: CallSession) -> None:
        await call.answer()
        first = asyncio.ensure_future(call.media())
        await held.wait()
        second = asyncio.ensure_future(call.media())
        await asyncio.sleep(0)  # waiting on the first one's attach
        first.cancel()
        seen["transport"] = await second
        seen["first cancelled"] = first.cancelled()
        attached.set()
        await call.wait_ended()

    async def check(caller: FakeCall) -> None:
        await asyncio.wait_for(attached.wait(), 5)
        assert seen["first cancelled"]
        (channel_id,) = _media_channels(fake)
        assert caller.bridge_id is not None
        assert fake.bridges[caller.bridge_id].channels == [caller.id, channel_id]
        assert not seen["transport"].closed and _streams(seen["transport"]) == 1

    await _serve_one_call(fake, app, check)


async def test_a_failed_attach_leaves_no_reference_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # The error is raised to every caller waiting on the attach through a future they
    # share: neither the future nor a frame holding it may stay in the error's traceback,
    # or the call's media path and all it holds wait for the cyclic collector.
    fake = fake_asterisk
    app = fake_app(tmp_path, "media-attach-tests")
    _fail_once(fake, _adds_media_channel)
    kinds: list[list[str]] = []

    @app.route("1000")
    async def talk(call: CallSession) -> None:
        await call.answer()
        outcomes = await asyncio.gather(call.media(), call.media(), return_exceptions=True)
        kinds.append([type(outcome).__name__ for outcome in outcomes])
        del outcomes
        await call.hangup()

    with collector_off():
        async with fake.serve(app):
            await fake.incoming(extension="1000")
            await fake.wait_until(lambda: bool(kinds) and not app.active_sessions)
        assert kinds == [["AriServerError", "AriServerError"]]
        assert cyclic_garbage((AriServerError, CallMedia)) == []
