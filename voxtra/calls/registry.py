"""Which call owns what: call channels, internal channels, bridges, originates.

Plain and synchronous: the app asks it who an event concerns and hands the event to
each owner; nothing here awaits or runs user code. Owners are anything with an ``id``,
``handle_event`` and ``channel_gone`` (the app's owners are
:class:`~voxtra.calls.context.CallContext` objects); the registry does not import them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from voxtra.ari.events import AriEvent, ChannelDestroyed, StasisEnd
from voxtra.ari.models import Channel
from voxtra.calls.state import INTERNAL_PREFIX
from voxtra.errors import CallEnded

__all__ = ["CallOwner", "CallRegistry", "PendingOriginate"]


class CallOwner(Protocol):
    """What the registry needs of a call."""

    @property
    def id(self) -> str: ...

    def handle_event(self, event: AriEvent) -> None: ...

    def channel_gone(self, channel_id: str) -> None:
        """An internal channel the call owned has left Asterisk (or the app)."""


OwnerT = TypeVar("OwnerT", bound=CallOwner)


class PendingOriginate:
    """An outbound call placed and not yet answered: its future and what Dial said."""

    def __init__(self, endpoint: str, on_ringing: Callable[[], None] | None = None) -> None:
        self.endpoint = endpoint
        self.future: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        self.dialstatus: str | None = None
        self.on_ringing = on_ringing
        """Called once when the far end rings (its 180: Dial RINGING / state Ringing)."""
        self.rang = False
        self.late: list[AriEvent] = []
        """The answered channel's hang-up events that came before its session was made
        (``originate()`` resumes a loop pass or more after the StasisStart): replayed
        into the session, or it would never see its call end."""


class CallRegistry(Generic[OwnerT]):
    """Ownership maps of one app. ``OwnerT`` is the owner type (the app's call context)."""

    def __init__(self) -> None:
        self.calls: dict[str, OwnerT] = {}
        """Call channel id -> its owner (live calls)."""
        self.internal: dict[str, OwnerT | None] = {}
        """Internal channel id (media, snoop, leg) -> the call that owns it (or None)."""
        self.bridges: dict[str, set[OwnerT]] = {}
        """Bridge id -> the calls that own or joined it."""
        self.originates: dict[str, PendingOriginate] = {}
        """Channel id of an outbound call not yet answered -> what waits for it."""
        self.ignored_kinds: frozenset[str] = frozenset()
        """Event kinds Asterisk does not send the app (its event filter): nobody can
        wait for them."""
        self._started: dict[str, asyncio.Future[Channel]] = {}

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[OwnerT]:
        return iter(list(self.calls.values()))

    # -- calls -----------------------------------------------------------------------

    def add_call(self, owner: OwnerT) -> None:
        self.calls[owner.id] = owner

    def remove_call(self, owner: OwnerT, *, kept_bridges: Iterable[str] = ()) -> None:
        """Forget a call and its bridge memberships (its internal channels go with it
        as they end). ``kept_bridges``: bridges of the call its teardown failed to
        destroy; they stay known, owned by nobody, for the app's stop to destroy."""
        # Forgotten with the call, a bridge whose destroy had failed (a 500, a reset
        # connection) stayed in Asterisk: nothing of the call tries again, and the
        # stop's sweep goes by this map (tests/unit/test_call_kernel.py).
        if self.calls.get(owner.id) is owner:
            del self.calls[owner.id]
        kept = set(kept_bridges)
        for bridge_id, members in list(self.bridges.items()):
            members.discard(owner)
            if not members and bridge_id not in kept:
                del self.bridges[bridge_id]

    def call(self, channel_id: str) -> OwnerT | None:
        return self.calls.get(channel_id)

    # -- internal channels -------------------------------------------------------------

    def expect_channel(self, channel_id: str, owner: OwnerT | None) -> asyncio.Future[Channel]:
        """Mark ``channel_id`` as internal (owned by ``owner``) and return a future for
        its StasisStart. Register before the request that creates the channel."""
        self.internal[channel_id] = owner
        future: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        self._started[channel_id] = future
        return future

    def stop_waiting(self, channel_id: str) -> None:
        """The StasisStart of ``channel_id`` is no longer awaited."""
        self._started.pop(channel_id, None)

    def forget_channel(self, channel_id: str) -> None:
        """``channel_id`` is gone or released: no owner, no waiter."""
        self.internal.pop(channel_id, None)
        self._started.pop(channel_id, None)

    def is_internal(self, channel_id: str) -> bool:
        return channel_id in self.internal or channel_id.startswith(INTERNAL_PREFIX)

    def awaiting_start(self, channel_id: str) -> bool:
        """Whether something still waits for the StasisStart of ``channel_id`` (the
        channel may not exist yet: its creating request can still be under way)."""
        waiter = self._started.get(channel_id)
        return waiter is not None and not waiter.done()

    def claims(self, channel_id: str) -> bool:
        """Whether ``channel_id`` is this app's: a call, an internal channel, or the
        channel of an originate (or AMD step) not yet handed its StasisStart."""
        return (
            channel_id in self.calls or channel_id in self.internal or channel_id in self.originates
        )

    def channel_started(self, channel: Channel) -> bool:
        """A StasisStart for an internal channel or an originate: wake what waits for it.
        False if the channel is neither (a new call, or an old one back in the app)."""
        if self.is_internal(channel.id):
            waiter = self._started.pop(channel.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(channel)
            return True
        pending = self.originates.get(channel.id)
        if pending is not None:
            if not pending.future.done():
                pending.future.set_result(channel)
            return True
        return False

    # -- bridges ---------------------------------------------------------------------

    def own_bridge(self, bridge_id: str, owner: OwnerT) -> None:
        self.bridges.setdefault(bridge_id, set()).add(owner)

    def bridge_owned(self, bridge_id: str) -> bool:
        """Whether a live call owns or joined ``bridge_id`` (one kept after its call's
        failed destroy is owned by nobody)."""
        return bool(self.bridges.get(bridge_id))

    def forget_bridge(self, bridge_id: str, owner: OwnerT | None = None) -> None:
        """``owner`` leaves the bridge's owners; None: the bridge is gone for all."""
        members = self.bridges.get(bridge_id)
        if members is None:
            return
        if owner is not None:
            members.discard(owner)
        if owner is None or not members:
            del self.bridges[bridge_id]

    # -- events ----------------------------------------------------------------------

    def concerns(self, kind: str, channel_id: str) -> bool:
        """Whether an event routed by ``channel_id`` alone (no bridge, no playback or
        recording target) could reach anyone here: a call, an internal channel, an
        originate waiting for it. False: :meth:`dispatch` would hand it to nobody."""
        return (
            channel_id in self.calls
            or channel_id in self.internal
            or channel_id in self.originates
            or channel_id in self._started
        )

    def owners_of(self, event: AriEvent) -> list[OwnerT]:
        """Every call ``event`` concerns, each once (its channel, bridge, or the target
        of its playback or recording)."""
        return self._owners(event, event.channel_id)

    def _owners(self, event: AriEvent, channel_id: str | None) -> list[OwnerT]:
        bridge_id = event.bridge_id
        targets = event.target_uris
        if bridge_id is None and not targets:
            # Most events name one channel and nothing else: no set to build (this path
            # is taken by every event of a call; measured 2.4 us -> 0.6 us an event).
            if channel_id is None:
                return []
            call = self.calls.get(channel_id)
            internal = self.internal.get(channel_id)
            if internal is None or internal is call:
                return [] if call is None else [call]
            return [internal] if call is None else [call, internal]
        found: dict[int, OwnerT] = {}

        def add(owner: OwnerT | None) -> None:
            if owner is not None:
                found.setdefault(id(owner), owner)

        if channel_id is not None:
            add(self.calls.get(channel_id))
            add(self.internal.get(channel_id))
        if bridge_id is not None:
            for owner in self.bridges.get(bridge_id, ()):
                add(owner)
        for target in targets:
            kind, _, ident = target.partition(":")
            if kind == "channel":
                add(self.calls.get(ident) or self.internal.get(ident))
            elif kind == "bridge":
                for owner in self.bridges.get(ident, ()):
                    add(owner)
        return list(found.values())

    def dispatch(self, event: AriEvent) -> None:
        """Hand ``event`` to every call it concerns; an internal channel that ended is
        forgotten (and its owner told). StasisStart is the app's (new calls)."""
        channel_id = event.channel_id
        ended = isinstance(event, _ENDED)
        if channel_id is not None and ended:
            waiter = self._started.get(channel_id)
            if waiter is not None and not waiter.done():
                waiter.set_exception(CallEnded(channel_id, f"{channel_id} ended"))
                waiter.exception()  # retrieved: nobody may be waiting any more
        for owner in self._owners(event, channel_id):
            owner.handle_event(event)
        if channel_id is not None and ended and channel_id in self.internal:
            holder = self.internal.pop(channel_id)
            self._started.pop(channel_id, None)
            if holder is not None:
                holder.channel_gone(channel_id)


_ENDED = (ChannelDestroyed, StasisEnd)
