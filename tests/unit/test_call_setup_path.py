"""The per-call control path made cheaper for issue 15 keeps its behaviour: a call is
hung up with one request, not two; waiting for the end still times out or returns; the
registry still finds every owner of an event, each once.

The call is a real CallContext built from plain data (a host of plain attributes, an
ARI stand-in that records what it was asked), as in test_call_teardown.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from voxtra.ari.errors import AriConflict, AriError, AriNotFound
from voxtra.ari.events import AriEvent, parse_event
from voxtra.ari.models import Channel
from voxtra.calls.context import CallContext
from voxtra.calls.registry import CallRegistry
from voxtra.calls.state import CallEndReason, internal_id
from voxtra.config import VoxtraSettings
from voxtra.errors import CallEnded
from voxtra.media.pacer import Ticker

T = TypeVar("T")


class Channels:
    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = outcomes
        self.hung_up: list[str] = []

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.hung_up.append(channel_id)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


class Host:
    def __init__(self, outcomes: list[BaseException | None] | None = None) -> None:
        self.app_name = "unit"
        self.settings = VoxtraSettings()
        self.channels = Channels(list(outcomes or []))
        self.ari: Any = type("Ari", (), {"channels": self.channels})()
        self.ticker = Ticker()
        self.registry: CallRegistry[CallContext] = CallRegistry()
        self.recordings = None

    def internal_id(self, kind: str) -> str:
        return internal_id(kind, "unit")

    def events_generation(self) -> int:
        return 1

    async def wait_reconciled(self, since: int, ended: asyncio.Event | None = None) -> bool:
        return False

    async def retry_after_outage(self, request: Callable[[], Awaitable[T]]) -> T:
        return await request()


def context(host: Host, channel_id: str = "c1") -> CallContext:
    return CallContext(host, Channel(id=channel_id, state="Up"))  # type: ignore[arg-type]


def event(kind: str, **fields: Any) -> AriEvent:
    return parse_event({"type": kind, **fields})


async def test_a_second_hangup_before_the_channel_is_gone_sends_nothing() -> None:
    # The handler hangs up, then the app hangs up after the handler, before Asterisk's
    # ChannelDestroyed arrives: one DELETE (there were two).
    host = Host()
    call = context(host)
    await call.hangup()
    await call.hangup("busy")
    assert host.channels.hung_up == ["c1"]
    assert call.end_reason is CallEndReason.HANGUP and call.hanging_up


async def test_a_hangup_asterisk_answered_404_is_not_sent_again() -> None:
    host = Host([AriNotFound(404, "DELETE", "/channels/c1", "Channel not found")])
    call = context(host)
    await call.hangup()
    await call.hangup()
    assert host.channels.hung_up == ["c1"]


async def test_a_hangup_that_failed_is_sent_again() -> None:
    host = Host([AriError(500, "DELETE", "/channels/c1", "Internal Server Error")])
    call = context(host)
    with pytest.raises(AriError):
        await call.hangup()
    await call.hangup()
    assert host.channels.hung_up == ["c1", "c1"]


async def test_no_hangup_once_the_channel_is_gone() -> None:
    host = Host()
    call = context(host)
    call.handle_event(event("ChannelDestroyed", cause=16, channel={"id": "c1"}))
    await call.hangup()
    assert host.channels.hung_up == []


async def test_wait_ended_times_out_returns_and_returns_at_once() -> None:
    call = context(Host())
    with pytest.raises(TimeoutError):
        await call.wait_ended(timeout=0.01)
    waiting = asyncio.ensure_future(call.wait_ended(timeout=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    call.handle_event(event("StasisEnd", channel={"id": "c1"}))
    await asyncio.wait_for(waiting, 1)
    await call.wait_ended(timeout=0)  # already ended: no TimeoutError even at 0
    await call.wait_ended()


async def test_the_registry_finds_every_owner_once() -> None:
    host = Host()
    registry = host.registry
    a, b = context(host, "a"), context(host, "b")
    registry.add_call(a)
    registry.add_call(b)
    registry.expect_channel("m-a", a)  # a's media channel
    registry.expect_channel("shared", a)
    registry.calls["shared"] = b  # a channel that is b's call and a's internal leg
    registry.expect_channel("a", a)  # a's own id among its internals: counted once
    registry.own_bridge("br", a)
    registry.own_bridge("br", b)

    def owners(**fields: Any) -> list[str]:
        return [o.id for o in registry.owners_of(event("ChannelStateChange", **fields))]

    assert owners(channel={"id": "a"}) == ["a"]
    assert owners(channel={"id": "m-a"}) == ["a"]
    assert owners(channel={"id": "shared"}) == ["b", "a"]
    assert owners(channel={"id": "nobody"}) == []
    entered = event("ChannelEnteredBridge", bridge={"id": "br"}, channel={"id": "a"})
    assert sorted(o.id for o in registry.owners_of(entered)) == ["a", "b"]
    playback = event(
        "PlaybackStarted", playback={"id": "p", "target_uri": "channel:m-a", "state": "playing"}
    )
    assert [o.id for o in registry.owners_of(playback)] == ["a"]
    on_bridge = event(
        "PlaybackStarted", playback={"id": "p", "target_uri": "bridge:br", "state": "playing"}
    )
    assert sorted(o.id for o in registry.owners_of(on_bridge)) == ["a", "b"]
    assert registry.owners_of(event("ApplicationReplaced")) == []


async def test_a_409_for_the_channel_leaving_stasis_ends_the_call_not_one_for_a_bridge() -> None:
    # Asterisk 22 answers a channel command for a channel gone on in the dialplan with
    # 409 "Channel not in Stasis application": the call has left us. Its 409 for a
    # bridge that is not the app's ("Bridge not in Stasis application") says nothing
    # of the call, which was taken for ended.
    async def failing(message: str) -> None:
        raise AriConflict(409, "POST", "/x", message)

    call = context(Host())
    with pytest.raises(CallEnded):
        await call.request(failing("Channel not in Stasis application"))
    with pytest.raises(AriConflict):
        await call.request(failing("Bridge not in Stasis application"))
    assert not call.ended
