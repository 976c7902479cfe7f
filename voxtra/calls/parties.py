"""Three-party calls: the caller, a callee the agent dials, and the agent listening in.

``CallSession.connect()`` dials the callee and connects it with the caller; the agent
(the app: its ExternalMedia channel, so ``audio_stream()``, ``send_audio()``, ``say``,
``listen`` and the voice pipeline) stays on the call in one of three modes, switchable
at any time: ``barge`` (both parties hear the agent), ``whisper`` (only one of them
does), ``spy`` (nobody does). ``close()`` takes the agent off the call and leaves the
two parties talking; ``disconnect()`` ends it for everyone.

Who is where (Asterisk's own parts; no audio is mixed in Python)::

    parties bridge (mixing):  caller, callee
    media bridge (mixing):    the agent's ExternalMedia channel, one snoop channel

The snoop channel is the agent's seat. Its ``spy=both`` side gives the agent what the
snooped party says *and* what it hears (the other party), so the agent's stream holds
both parties in every mode; its ``whisper`` direction says who hears the agent:

    barge              snoop on the callee, whisper=both
    whisper(callee)    snoop on the callee, whisper=out
    whisper(caller)    snoop on the caller, whisper=out
    spy                snoop on the callee, whisper=none

``whisper=out`` adds the agent to what that party hears; ``in`` adds it to what the
party says, which the bridge carries to the other party: ``both`` reaches both. A mode
switch puts a new snoop in the media bridge, then hangs up the old one (so the agent's
listening never stops; the two overlap for one request).

Measured on Asterisk 22.10.1 (three pjsua2 phones, the caller playing 440 Hz, the
callee 880 Hz, the agent sending 1,300 Hz; level of each tone in each party's
recording, 1.5 s windows, dBFS; the tones are sent at -20.7):

==========================  ============  ============  ==================
mode                        caller: 1300  callee: 1300  agent: 440 / 880
==========================  ============  ============  ==================
no snoop                    -85.8         -83.9         -20.7 / -82.2
whisper=out on the callee   -85.8         -20.8         -20.7 / -20.7
whisper=both on the callee  -20.8         -20.8         -20.7 / -20.7
whisper=none on the callee  -85.8         -83.9         -20.7 / -20.7
whisper=out on the caller   -20.8         -83.9         -20.7 / -20.7
==========================  ============  ============  ==================

The agent does not hear itself back through the snoop (1,300 Hz at -68 dBFS in its own
stream in barge, -77 in spy): Asterisk hands a frame to the spies before it mixes the
whisper in. The other design measured, the ExternalMedia channel in the parties'
bridge (barge) and muted inbound (spy), works for those two modes but cannot whisper
to one party, since a mixing bridge sends every member the mix of all the others; one
topology for all modes keeps a switch to one step. Adding a channel to a bridge while
it is in another moves it (no ``removeChannel`` first; measured): that is how the
caller goes from the media bridge to the parties' bridge and back.

Which endpoint is "the original callee": ``to`` when it names a channel endpoint
(``PJSIP/200``, ``PJSIP/trunk/sip:+15551234@carrier``, ``Local/x@ctx``); otherwise the
number (``to``, else ``call.called_number``) put into the endpoint template, the call's
``metadata["connect_endpoint"]`` (set per route: ``@app.route(...,
metadata={"connect_endpoint": "PJSIP/{number}@trunk"})``), else
:data:`DEFAULT_ENDPOINT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent, ChannelDtmfReceived
from voxtra.calls.context import CallContext, expected
from voxtra.calls.media import CallMedia
from voxtra.calls.playback import Playback, play
from voxtra.calls.voice import CallVoice
from voxtra.errors import CallEnded, CallFailed, ConfigError, OriginateError, VoxtraError
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.transport import MediaTransport

__all__ = [
    "DEFAULT_ENDPOINT",
    "SUPERVISOR_KEYS",
    "AgentMode",
    "CallParties",
    "PartyError",
    "PartyState",
    "Supervision",
    "SupervisorMode",
    "TransferDeclined",
    "callee_endpoint",
]

logger = logging.getLogger(__name__)

Party = Literal["caller", "callee"]
Direction = Literal["none", "both", "out", "in"]

DEFAULT_ENDPOINT = "PJSIP/{number}"
"""The endpoint template for a number when the route sets no ``connect_endpoint``."""
RINGBACK = "tone:ring"
"""What the caller hears while the callee rings (Asterisk's indications)."""
SNOOP_START = 5.0
"""Seconds a snoop channel has to enter the app before the command gives up."""
ENDPOINT_KEY = "connect_endpoint"
"""The call metadata key holding the endpoint template (``{number}`` is replaced)."""


class PartyError(VoxtraError, RuntimeError):
    """A three-party command that does not fit the call's state (``whisper()`` before
    ``connect()``, ``connect()`` twice, ``say()`` while spying)."""


class TransferDeclined(OriginateError):
    """A warm transfer's target answered and declined it (its briefing said no)."""


class PartyState(StrEnum):
    ALONE = "alone"
    """The caller with the agent only (before ``connect()``, or after the callee left)."""
    CONNECTING = "connecting"
    """The callee is being dialled; the caller is still with the agent."""
    CONNECTED = "connected"
    """Caller and callee connected, the agent on the call in its mode."""
    CLOSED = "closed"
    """The agent left; caller and callee talk until one hangs up."""
    DISCONNECTED = "disconnected"
    """Everyone was hung up."""


@dataclass(frozen=True)
class AgentMode:
    """Who hears the agent: ``barge`` (both parties), ``whisper`` (``to`` only),
    ``spy`` (nobody)."""

    name: Literal["barge", "whisper", "spy"]
    to: Party | None = None

    def __post_init__(self) -> None:
        if self.name not in ("barge", "whisper", "spy"):
            raise ConfigError(f"mode must be barge, whisper or spy, not {self.name!r}")
        if self.name == "whisper" and self.to not in ("caller", "callee"):
            raise ConfigError(f"whisper(to=...) takes 'caller' or 'callee', not {self.to!r}")
        if self.name != "whisper" and self.to is not None:
            raise ConfigError(f"{self.name} takes no 'to'")

    def __str__(self) -> str:
        return f"whisper(to={self.to!r})" if self.name == "whisper" else self.name

    @property
    def heard(self) -> bool:
        """True if a party hears the agent (the pipeline may speak)."""
        return self.name != "spy"

    @property
    def seat(self) -> tuple[Party, Direction]:
        """The party the agent's snoop is on and its whisper direction (see the table
        in the module doc); the snoop always spies both directions."""
        if self.name == "barge":
            return "callee", "both"
        if self.name == "spy":
            return "callee", "none"
        return self.to or "callee", "out"


BARGE = AgentMode("barge")


@dataclass(frozen=True)
class SupervisorMode:
    """What a supervisor's phone does on a call: ``spy`` (hears the caller and the
    agent, nobody hears it), ``whisper`` to ``agent`` or ``caller`` (only that one
    hears it), ``barge`` (both hear it)."""

    name: Literal["spy", "whisper", "barge"]
    to: Literal["agent", "caller"] | None = None

    def __post_init__(self) -> None:
        if self.name not in ("spy", "whisper", "barge"):
            raise ConfigError(f"mode must be spy, whisper or barge, not {self.name!r}")
        if self.name == "whisper" and self.to not in ("agent", "caller"):
            raise ConfigError(f"whisper takes to='agent' or to='caller', not {self.to!r}")
        if self.name != "whisper" and self.to is not None:
            raise ConfigError(f"{self.name} takes no 'to'")

    def __str__(self) -> str:
        return f"whisper(to={self.to!r})" if self.name == "whisper" else self.name

    @property
    def seat(self) -> tuple[Literal["agent", "caller"], Direction]:
        """The channel the supervisor's snoop is on, and its whisper direction. The
        snoop spies both directions of it: the caller's (what it says and hears) or
        the agent's, so the supervisor hears both sides either way."""
        if self.name == "whisper" and self.to == "agent":
            return "agent", "out"
        if self.name == "barge":
            return "caller", "both"
        return "caller", "out" if self.name == "whisper" else "none"


SUPERVISOR_KEYS: dict[str, SupervisorMode] = {
    "1": SupervisorMode("spy"),
    "2": SupervisorMode("whisper", "agent"),
    "3": SupervisorMode("whisper", "caller"),
    "4": SupervisorMode("barge"),
}
"""The keys a supervisor presses on its phone to switch mode (``keys=`` to change)."""


def callee_endpoint(to: str | None, called_number: str, template: str | None = None) -> str:
    """The endpoint ``connect()`` dials (see the module doc)."""
    if to is not None and "/" in to:
        return to
    number = to if to is not None else called_number
    if not number:
        raise ConfigError(
            "connect() has no number to dial: the call has no called_number; pass to="
        )
    if any(c in number for c in "/&,@ \r\n"):
        raise ConfigError(f"not a number connect() can dial: {number!r}")
    template = template or DEFAULT_ENDPOINT
    if "{number}" not in template:
        raise ConfigError(f"the endpoint template {template!r} has no {{number}}")
    return template.replace("{number}", number)


class CallParties:
    """The three-party state of one call: the callee's leg, the parties' bridge, the
    agent's snoop and its mode. Everything made here is owned by the call's context,
    so the call's one teardown releases it whatever happened."""

    def __init__(self, context: CallContext, media: CallMedia) -> None:
        self.context = context
        self.media = media
        self.state = PartyState.ALONE
        self.mode: AgentMode = BARGE
        """The agent's mode (kept while alone: the next connect() starts in it)."""
        self.endpoint: str | None = None
        """The callee's endpoint as dialled."""
        self.callee_id: str | None = None
        """The callee's channel (an internal leg of this call) while it is connected."""
        self.bridge_id: str | None = None
        """The parties' bridge (caller and callee)."""
        self.snoop_id: str | None = None
        """The agent's seat: a snoop channel in the media bridge."""
        self.supervisions: list[Supervision] = []
        """Supervisors' phones on this call (``app.supervise``), ended ones included."""
        self._listeners: dict[Party, tuple[str, CallMedia]] = {}
        """Per-party audio (:meth:`party_audio`): each party's snoop and media path."""
        self._lock = asyncio.Lock()

    # -- commands ----------------------------------------------------------------------

    async def connect(
        self,
        *,
        ring_time: int = 60,
        to: str | None = None,
        mode: AgentMode = BARGE,
        caller_id: str | None = None,
        ringback: bool = True,
    ) -> str:
        """Dial the callee; once answered, connect it with the caller and seat the agent
        in ``mode``. Returns the callee's channel id. The caller hears ringback while
        the callee rings (``ringback=False``: the agent's audio only).

        Raises the dial's outcome (:class:`~voxtra.errors.CallBusy`,
        :class:`~voxtra.errors.CallNoAnswer`, :class:`~voxtra.errors.CallFailed`, also
        for a callee that answers and hangs up before it is connected); the caller then
        stays with the agent as before.
        """
        context = self.context
        context.check_alive()
        endpoint = callee_endpoint(to, context.called_number, context.metadata.get(ENDPOINT_KEY))
        if not isinstance(ring_time, int) or isinstance(ring_time, bool) or ring_time <= 0:
            raise ConfigError(f"ring_time must be a whole number of seconds > 0, not {ring_time!r}")
        async with self._lock:
            if self.state is not PartyState.ALONE:
                raise PartyError(f"connect(): the call is {self.state}, not alone with the agent")
            # The agent's bridge with the caller first: where the caller stays if the
            # callee cannot be reached, and where the agent's seat goes.
            await self.media.get()
            self.state = PartyState.CONNECTING
            self.endpoint = endpoint
            tone: Playback | None = None
            starting: asyncio.Future[Playback] | None = None
            # The ringback inside the try: a play that fails or is cancelled left the
            # call CONNECTING for good (every connect() and close() then refused).
            try:
                if ringback:
                    # A playback on the caller's channel: the agent in the bridge does
                    # not hear it. Shielded: a connect cancelled while the request is
                    # out still learns the playback, to stop it (tone:ring never ends).
                    starting = asyncio.ensure_future(play(context, [RINGBACK]))
                    tone = await asyncio.shield(starting)
                leg = await self.dial(endpoint, ring_time, caller_id or context.caller_id or None)
            except BaseException:
                self.state = PartyState.ALONE if not context.ended else PartyState.DISCONNECTED
                raise
            finally:
                if tone is None and starting is not None:
                    tone = await _started(starting)
                # Its error's traceback holds this frame once raised here: no cycle.
                starting = None
                if tone is not None and not tone.done:
                    with contextlib.suppress(AriError, CallEnded):
                        await tone.stop()
            # Registered before any other await: the callee may hang up at once.
            left = context.expect_leaving(leg)
            try:
                if self.bridge_id is None:
                    self.bridge_id = await context.create_bridge("parties")
                # Moves the caller out of the media bridge (measured: no remove needed).
                await context.request(
                    context.ari.bridges.add_channel(self.bridge_id, [context.id, leg])
                )
                self.callee_id = leg
                await self._seat(mode)
            except BaseException as exc:
                try:
                    # Asked before the leg is released (which forgets it). A callee that
                    # hangs up on answering makes Asterisk refuse the next request about
                    # it: addChannel 400 "Channel not found", snoop 404 (measured on
                    # 22.10.1 with Local/hangup-after@voxtra-test: 2 connects in 6). They
                    # reached the handler as they were; the hang-up is the outcome.
                    hung_up = (
                        isinstance(exc, Exception)
                        and not context.ended
                        and await context.has_left(leg, left)
                    )
                finally:
                    context.forget(left)
                    self.callee_id = None
                    with contextlib.suppress(AriError, CallEnded):
                        await context.release_channel(leg)
                    with contextlib.suppress(AriError, CallEnded):
                        await self._back_to_agent()
                    self.state = PartyState.ALONE if not context.ended else PartyState.DISCONNECTED
                if hung_up:
                    logger.info("call %s: %s hung up before it was connected", context.id, leg)
                    raise CallFailed(
                        endpoint, None, "", "the callee hung up before it was connected"
                    ) from exc
                raise
            self.state = PartyState.CONNECTED
            context.spawn(self._watch(leg, left), name=f"voxtra-callee-{context.id}")
            logger.info("call %s: %s connected (%s)", context.id, endpoint, mode)
            return leg

    async def warm_transfer(
        self,
        target: str,
        brief: Callable[[], Awaitable[bool | None]],
        *,
        ring_time: int = 30,
        caller_id: str | None = None,
    ) -> str:
        """Warm transfer: the caller waits with music on hold, the agent dials
        ``target`` and briefs it (``await brief()``: the agent's say/listen reach the
        target only), then caller and target are connected; the agent, seated
        nowhere, is to :meth:`close` next (the session does).

        If the target does not answer, is busy, hangs up during the briefing, or
        ``brief()`` returns False (declined: :class:`TransferDeclined`), the caller is
        back with the agent and the outcome is raised. Returns the target's channel.
        """
        context = self.context
        context.check_alive()
        endpoint = callee_endpoint(
            target, context.called_number, context.metadata.get(ENDPOINT_KEY)
        )
        async with self._lock:
            if self.state is not PartyState.ALONE:
                raise PartyError(f"transfer_to(warm=True): the call is {self.state}, not alone")
            await self.media.get()
            agent_bridge = self.media.bridge_id
            assert agent_bridge is not None
            self.state = PartyState.CONNECTING
            self.endpoint = endpoint
            leg: str | None = None
            left: asyncio.Future[AriEvent] | None = None
            try:
                if self.bridge_id is None:
                    self.bridge_id = await context.create_bridge("parties")
                # The caller waits alone in the parties' bridge, hearing music on hold;
                # the agent's bridge is the target's until the briefing is over.
                await context.request(context.ari.bridges.add_channel(self.bridge_id, context.id))
                await context.ari.bridges.start_moh(self.bridge_id)
                leg = await self.dial(endpoint, ring_time, caller_id or context.caller_id or None)
                left = context.expect_leaving(leg)
                await context.ari.bridges.add_channel(agent_bridge, leg)
                accepted = await self._brief(brief, endpoint, left)
                # The decline first: a target that says no hangs up next, often before
                # the warm transfer looks; the outcome is still the decline.
                if accepted is False:
                    raise TransferDeclined(endpoint, None, "", "the target declined the transfer")
                if context.seen_leaving(leg, left):
                    raise CallFailed(endpoint, None, "", "the target hung up during the briefing")
                await context.ari.bridges.stop_moh(self.bridge_id)
                # Moves the target out of the agent's bridge, to the caller.
                await context.ari.bridges.add_channel(self.bridge_id, leg)
            except BaseException as exc:
                try:
                    # A request about the target refused because it hung up (as in
                    # connect()), before the briefing or after it: that is the outcome.
                    hung_up = (
                        isinstance(exc, Exception)
                        and not isinstance(exc, CallFailed | TransferDeclined)
                        and leg is not None
                        and left is not None
                        and not context.ended
                        and await context.has_left(leg, left)
                    )
                finally:
                    if left is not None:
                        context.forget(left)
                    # Each step on its own: one failing must not keep the caller on hold.
                    if leg is not None:
                        with contextlib.suppress(AriError, CallEnded):
                            await context.release_channel(leg)
                    if self.bridge_id is not None:
                        with contextlib.suppress(AriError, CallEnded):
                            await context.ari.bridges.stop_moh(self.bridge_id)
                    with contextlib.suppress(AriError, CallEnded):
                        await self._back_to_agent()
                    self.state = PartyState.ALONE if not context.ended else PartyState.DISCONNECTED
                if hung_up:
                    raise CallFailed(
                        endpoint, None, "", "the target hung up before it was connected"
                    ) from exc
                raise
            self.callee_id = leg
            self.state = PartyState.CONNECTED
            context.spawn(self._watch(leg, left), name=f"voxtra-callee-{context.id}")
            logger.info("call %s: warm transfer to %s: connected", context.id, endpoint)
            return leg

    async def _brief(
        self,
        brief: Callable[[], Awaitable[bool | None]],
        endpoint: str,
        left: asyncio.Future[AriEvent],
    ) -> bool | None:
        """``await brief()`` while the target is on the line: its hang-up (``left``)
        cuts the briefing short, cancelled, with :class:`~voxtra.errors.CallFailed`;
        the caller's, with CallEnded."""
        # A task of its own, watched with the target's leaving: awaited in line, the
        # briefing went on talking to nobody until it returned by itself (a say() to
        # its end, a listen() to its timeout) while the caller waited on hold.
        briefing = asyncio.ensure_future(brief())
        try:
            await asyncio.wait((briefing, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not briefing.done():
                briefing.cancel()
                await asyncio.wait((briefing,))
        try:
            if not left.done() or _declined(briefing):
                # A decline and the hang-up after it in one pass of the loop (Asterisk
                # sends a key and a hang-up in one read): the briefing's answer stands.
                return briefing.result()
            if not briefing.cancelled():
                briefing.exception()  # retrieved: the hang-up is the outcome, not its error
            await expected(left)  # the caller hung up: CallEnded
            # What the agent had queued for the target is not for the caller, who is
            # back with the agent next.
            transport = self.media.transport
            if transport is not None:
                await transport.flush()
            logger.info("call %s: the target hung up during the briefing", self.context.id)
            raise CallFailed(endpoint, None, "", "the target hung up during the briefing")
        finally:
            # The briefing's error, raised here, holds this frame: let go of the task.
            del briefing

    async def set_mode(self, mode: AgentMode) -> None:
        """Switch the agent to ``mode`` (barge, whisper, spy)."""
        self.context.check_alive()
        async with self._lock:
            if self.state is not PartyState.CONNECTED:
                raise PartyError(f"{mode}: needs a connected callee (the call is {self.state})")
            if mode != self.mode:
                await self._seat(mode)

    async def close(self, voice: CallVoice | None) -> None:
        """The agent leaves: its pipeline, snoop, media channel and bridge go; caller and
        callee stay connected until one hangs up (then the other is hung up).
        Idempotent."""
        async with self._lock:
            if self.state in (PartyState.CLOSED, PartyState.DISCONNECTED):
                return
            if self.state is PartyState.ALONE and self.endpoint is not None:
                # The callee hung up just before: nobody to leave the caller with, and
                # no reason to fail a handler for a race it cannot avoid.
                logger.info("call %s: close(): the callee has already left", self.context.id)
                return
            if self.state is not PartyState.CONNECTED:
                raise PartyError(f"close(): no callee to leave the caller with ({self.state})")
            self.context.check_alive()
            self.state = PartyState.CLOSED
            # The handler may now return: the call lives on until a party hangs up.
            self.context.handed_off = True
            if voice is not None:
                await voice.close()
            await self._stop_listening()
            await self._unseat()
            agent = self.media.channel_id
            await self.media.close()
            bridge = self.media.bridge_id
            if bridge is not None:
                await self.destroy_bridge(bridge)
            if agent is not None:
                # A supervisor coaching the AI agent lost its seat with the media channel
                # (Asterisk ends a snoop with the channel it spies): its phone recorded
                # digital silence for the rest of the call, caller and callee included
                # (tests/integration/test_three_party_supervisors.py). The agent is the
                # callee now.
                for supervision in self.supervisions:
                    await supervision.follow_agent(agent)
            logger.info("call %s: the agent left; caller and callee stay", self.context.id)

    async def disconnect(self) -> None:
        """Hang up the callee and the caller (the agent's channels go at the teardown).
        Idempotent."""
        # Not under the lock: a connect() waiting for the callee to answer holds it,
        # and hanging up the caller is what makes that connect() give up (and hang up
        # its ringing leg).
        if self.state is PartyState.DISCONNECTED:
            return
        self.state = PartyState.DISCONNECTED
        leg, self.callee_id = self.callee_id, None
        if leg is not None:
            with contextlib.suppress(AriError):
                await self.context.release_channel(leg)
        await self.context.hangup()

    async def party_audio(
        self, codec: Codec, sample_rate: int
    ) -> AsyncIterator[tuple[Party, AudioChunk]]:
        """Each party's own voice, labelled ``caller`` / ``callee``, as 20 ms chunks
        (interleaved as they come) until the callee leaves, the agent closes, or the
        call ends.

        Each party is heard through a snoop of its own (``spy=in``: what it says; the
        agent's whisper is not in it) bridged with an ExternalMedia channel of its own,
        made on first use and kept while the parties are connected.
        """
        ChunkConverter(codec, sample_rate)  # validates the request before any channel
        transports = await self._listen_to_parties()
        queue: asyncio.Queue[tuple[Party, AudioChunk] | None] = asyncio.Queue(maxsize=500)

        async def pump(party: Party, transport: MediaTransport) -> None:
            converter = ChunkConverter(codec, sample_rate)
            transport.set_inbound_format(converter.codec, converter.rate)
            try:
                async for frame in transport.frames():
                    chunk = converter.convert(frame)
                    if chunk.data:
                        await queue.put((party, chunk))
            finally:
                # Never blocks (a cancelled pump must end at once): the reader, gone or
                # behind a full queue, then stops at the sentinels it does get.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

        pumps = [asyncio.ensure_future(pump(p, t)) for p, t in transports.items()]
        try:
            running = len(pumps)
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                else:
                    yield item
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _listen_to_parties(self) -> dict[Party, MediaTransport]:
        context = self.context
        context.check_alive()
        async with self._lock:
            if self.state is not PartyState.CONNECTED or self.callee_id is None:
                raise PartyError(f"party_audio(): needs a connected callee ({self.state})")
            transports: dict[Party, MediaTransport] = {}
            seats: tuple[tuple[Party, str], ...] = (
                ("caller", context.id),
                ("callee", self.callee_id),
            )
            for party, target in seats:
                if party not in self._listeners:
                    snoop_id = await self.snoop(target, "in", "none")
                    media = CallMedia(context, self.media.settings, source=snoop_id)
                    self._listeners[party] = (snoop_id, media)
                transports[party] = await self._listeners[party][1].get()
            return transports

    async def _stop_listening(self) -> None:
        """Drop the per-party listeners (their snoops, media channels, bridges)."""
        listeners, self._listeners = self._listeners, {}
        for snoop_id, media in listeners.values():
            await media.close()
            with contextlib.suppress(AriError):
                await self.context.release_channel(snoop_id)
            if media.bridge_id is not None:
                with contextlib.suppress(AriError):
                    await self.destroy_bridge(media.bridge_id)

    async def supervise(
        self,
        endpoint: str,
        mode: SupervisorMode,
        *,
        ring_time: int = 30,
        keys: Mapping[str, SupervisorMode] | None = SUPERVISOR_KEYS,
    ) -> Supervision:
        """Dial a supervisor's phone into the call in ``mode`` (see :class:`Supervision`);
        the supervisor switches mode with ``keys`` on its phone (None: no keys).
        Raises the dial's outcome if it does not answer."""
        self.context.check_alive()
        supervision = Supervision(self, endpoint)
        await supervision.start(mode, ring_time, keys)
        self.supervisions.append(supervision)
        return supervision

    def agent_channel(self) -> str:
        """Who "the agent" is to a supervisor: the callee (a person the agent put
        through, connected, or talking with the caller once the agent left), else the
        app's own media channel (the AI agent)."""
        # CLOSED too: the agent's media channel is gone then, and whispering to "the
        # agent" after close() was refused ("no agent listens on this call").
        if self.state in (PartyState.CONNECTED, PartyState.CLOSED) and self.callee_id is not None:
            return self.callee_id
        channel = self.media.channel_id
        if channel is None or self.media.transport is None or self.media.transport.closed:
            raise PartyError("whisper to the agent: no agent listens on this call (no media)")
        return channel

    # -- Asterisk steps ----------------------------------------------------------------

    async def dial(self, endpoint: str, ring_time: int, caller_id: str | None) -> str:
        """The callee's leg once answered; CallEnded if the caller hangs up meanwhile."""
        context = self.context
        dial = asyncio.ensure_future(
            context.dial_leg(endpoint, timeout=ring_time, caller_id=caller_id)
        )
        gone: asyncio.Future[None] = asyncio.ensure_future(asyncio.shield(context.gone))
        waits: set[asyncio.Future[Any]] = {dial, gone}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not dial.done():
                dial.cancel()  # dial_leg hangs its leg up on the way out
                with contextlib.suppress(BaseException):
                    await dial
        try:
            if dial.cancelled():
                raise CallEnded(context.id, f"call {context.id} ended while {endpoint} rang")
            try:
                return dial.result()
            except AriError as exc:
                raise CallFailed(
                    endpoint, None, exc.message, "Asterisk refused to dial it"
                ) from exc
        finally:
            # The task keeps its exception (busy, no answer, cancelled), whose traceback
            # holds this frame once raised here: let go of the task, or they are a cycle.
            del dial, waits

    async def _seat(self, mode: AgentMode) -> None:
        """Put a snoop for ``mode`` in the media bridge, then drop the previous one."""
        context = self.context
        party, whisper = mode.seat
        target = context.id if party == "caller" else self.callee_id
        bridge = self.media.bridge_id
        if target is None or bridge is None:
            raise PartyError(f"{mode}: the call has no callee or no agent bridge")
        snoop_id = await self.snoop(target, "both", whisper)
        try:
            await context.ari.bridges.add_channel(bridge, snoop_id)
        except BaseException:
            with contextlib.suppress(AriError):
                await context.release_channel(snoop_id)
            raise
        old, self.snoop_id, self.mode = self.snoop_id, snoop_id, mode
        if old is not None:
            with contextlib.suppress(AriError):
                await context.release_channel(old)

    async def snoop(self, target: str, spy: Direction, whisper: Direction) -> str:
        """A snoop channel on ``target``, owned by the call, once it is in Stasis (a
        bridge takes it only then: before, 422, as for ExternalMedia)."""
        context = self.context
        snoop_id = context.host.internal_id("snoop")
        started = context.expect_channel(snoop_id)
        try:
            try:
                await context.ari.channels.snoop(
                    target, context.host.app_name, spy=spy, whisper=whisper, snoop_id=snoop_id
                )
            except AriNotFound as exc:
                # 404 "Provided channel was not found": the target hung up as its snoop
                # was asked for. A mode switch, party_audio() or a supervisor's seat
                # meeting the callee's hang-up raised this to the handler, past its
                # `except PartyError` (measured on 22.10.1, each of the three raced
                # with the callee's hang-up: the snoop's 404 every time).
                if target == context.id:
                    raise CallEnded(context.id, f"call {context.id} has ended") from exc
                raise PartyError(f"{target} has hung up: it cannot be snooped on") from exc
            try:
                await context.wait_channel(snoop_id, started, timeout=SNOOP_START)
            except TimeoutError as exc:
                # Typed: a bare TimeoutError got past the supervisor's key handler
                # (PartyError, AriError) and ended its keys task for the rest of the call.
                raise PartyError(
                    f"the snoop channel on {target} did not enter the app within "
                    f"{SNOOP_START:g} s (check Asterisk's load and its log)"
                ) from exc
        except BaseException:
            with contextlib.suppress(AriError):
                await context.release_channel(snoop_id)
            raise
        return snoop_id

    async def _unseat(self) -> None:
        snoop, self.snoop_id = self.snoop_id, None
        if snoop is not None:
            with contextlib.suppress(AriError):
                await self.context.release_channel(snoop)

    async def _back_to_agent(self) -> None:
        """The caller back in the media bridge with the agent; the parties' bridge gone."""
        await self._stop_listening()
        await self._unseat()
        bridge = self.media.bridge_id
        if bridge is not None and not self.context.ended:
            await self.context.request(
                self.context.ari.bridges.add_channel(bridge, self.context.id)
            )
        if self.bridge_id is not None:
            await self.destroy_bridge(self.bridge_id)
            self.bridge_id = None

    async def destroy_bridge(self, bridge_id: str) -> None:
        context = self.context
        with contextlib.suppress(AriNotFound):
            await context.ari.bridges.destroy(bridge_id)
        context.host.registry.forget_bridge(bridge_id)
        context.bridges.discard(bridge_id)

    async def _watch(self, leg: str, left: asyncio.Future[AriEvent]) -> None:
        """The callee hung up: the caller goes back to the agent, or (the agent gone)
        the call ends."""
        try:
            await expected(left)
        except CallEnded:
            return
        async with self._lock:
            if self.callee_id != leg:
                return  # released by disconnect() or replaced
            self.callee_id = None
            if self.state is PartyState.CLOSED:
                logger.info("call %s: the callee hung up; ending the call", self.context.id)
                await self.context.hangup()
                return
            if self.state is PartyState.CONNECTED:
                logger.info(
                    "call %s: the callee hung up; caller back with the agent", self.context.id
                )
                self.state = PartyState.ALONE
                with contextlib.suppress(CallEnded):
                    await self._back_to_agent()
            for supervision in self.supervisions:
                await supervision.follow_agent(leg)


async def _started(starting: asyncio.Future[Playback]) -> Playback | None:
    """The playback of a play request left running by a cancelled caller, once Asterisk
    answered it; None if it failed (nothing plays then)."""
    await asyncio.wait((starting,))
    if starting.cancelled() or starting.exception() is not None:
        return None
    return starting.result()


class Supervision:
    """A supervisor's phone on a live call (``app.supervise()``): its own leg in a
    bridge with one snoop, on the caller or on the agent, whose whisper direction is the
    mode (as the agent's seat in :class:`CallParties`). Everything belongs to the call:
    released when the supervisor hangs up, at :meth:`end`, or with the call."""

    def __init__(self, parties: CallParties, endpoint: str) -> None:
        # Weak: the parties keep their supervisions, and a cycle would leave the whole
        # session to the cyclic collector (tests/unit/test_call_garbage.py).
        self._parties = weakref.ref(parties)
        self.context = parties.context
        self.endpoint = endpoint
        self.leg_id: str | None = None
        """The supervisor's channel."""
        self.bridge_id: str | None = None
        self.snoop_id: str | None = None
        self.mode: SupervisorMode | None = None
        self.target: str | None = None
        """The channel the supervisor's snoop is on (the caller, or the agent)."""
        self.ended = False
        self._lock = asyncio.Lock()
        self._keys_task: asyncio.Task[None | None] | None = None
        self._keys_waiter: asyncio.Future[AriEvent] | None = None

    @property
    def parties(self) -> CallParties:
        """The call's parties; PartyError once the call's session is gone."""
        parties = self._parties()
        if parties is None:
            raise PartyError(f"call {self.context.id} has ended")
        return parties

    async def start(
        self,
        mode: SupervisorMode,
        ring_time: int,
        keys: Mapping[str, SupervisorMode] | None = None,
    ) -> None:
        context = self.context
        leg = await self.parties.dial(self.endpoint, ring_time, None)
        left = context.expect_leaving(leg)
        self.leg_id = leg
        try:
            self.bridge_id = await context.create_bridge("supervisor")
            await context.ari.bridges.add_channel(self.bridge_id, leg)
            await self.set_mode(mode)
        except BaseException:
            context.forget(left)
            await self.end()
            raise
        context.spawn(self._watch(left), name=f"voxtra-supervisor-{context.id}")
        if keys:
            # Registered now, before supervise() returns: a key pressed at once is kept.
            # The predicate collects every key of the leg and never matches, so the
            # waiter stays for the call (a waiter re-registered per key would miss a
            # key arriving before the loop resumed: seen on the fake, the first key).
            digits: asyncio.Queue[str] = asyncio.Queue()

            def collect(event: ChannelDtmfReceived) -> bool:
                if event.channel.id == leg:
                    digits.put_nowait(event.digit)
                return False

            self._keys_waiter = context.expect(ChannelDtmfReceived, collect)
            self._keys_task = context.spawn(
                self._follow_keys(dict(keys), digits),
                name=f"voxtra-supervisor-keys-{context.id}",
            )
        logger.info("call %s: supervisor %s joined (%s)", context.id, self.endpoint, mode)

    async def _follow_keys(
        self, keys: dict[str, SupervisorMode], digits: asyncio.Queue[str]
    ) -> None:
        """The supervisor switches mode from its own phone's keys (until it leaves)."""
        try:
            while not self.ended:
                digit = await digits.get()
                mode = keys.get(digit)
                if mode is not None and mode != self.mode:
                    try:
                        await self.set_mode(mode)
                    except (PartyError, AriError) as exc:
                        logger.info("call %s: supervisor key %s: %s", self.context.id, digit, exc)
        finally:
            # Cancelled at the call's end, the task keeps its CancelledError, whose
            # traceback holds this frame and so this supervision: let go of the task.
            self._keys_task = None

    async def set_mode(self, mode: SupervisorMode) -> None:
        """Switch to ``mode``: a new snoop joins the supervisor, then the old one goes."""
        context = self.context
        async with self._lock:
            if self.ended or self.bridge_id is None:
                raise PartyError("the supervisor has left the call")
            context.check_alive()
            party, whisper = mode.seat
            target = context.id if party == "caller" else self.parties.agent_channel()
            snoop_id = await self.parties.snoop(target, "both", whisper)
            self.target = target
            try:
                await context.ari.bridges.add_channel(self.bridge_id, snoop_id)
            except BaseException:
                with contextlib.suppress(AriError):
                    await context.release_channel(snoop_id)
                raise
            old, self.snoop_id, self.mode = self.snoop_id, snoop_id, mode
            if old is not None:
                with contextlib.suppress(AriError):
                    await context.release_channel(old)

    async def follow_agent(self, gone: str) -> None:
        """The channel ``gone`` left (a connected callee hung up, or the AI agent's media
        channel at ``close()``): if the supervisor was on it, seat it again on whoever
        is the agent now, in the same mode."""
        if self.ended or self.target != gone or self.mode is None:
            return
        with contextlib.suppress(PartyError, AriError, CallEnded):
            await self.set_mode(self.mode)

    async def end(self) -> None:
        """Hang up the supervisor's phone and release its snoop and bridge. Idempotent."""
        async with self._lock:
            if self.ended:
                return
            self.ended = True
            context = self.context
            if self._keys_waiter is not None:
                context.forget(self._keys_waiter)
            if self._keys_task is not None and self._keys_task is not asyncio.current_task():
                self._keys_task.cancel()
            for channel in (self.snoop_id, self.leg_id):
                if channel is not None:
                    with contextlib.suppress(AriError):
                        await context.release_channel(channel)
            parties = self._parties()
            if self.bridge_id is not None and parties is not None:
                # (Gone with the session: the call ended and released its bridges.)
                with contextlib.suppress(AriError):
                    await parties.destroy_bridge(self.bridge_id)

    async def _watch(self, left: asyncio.Future[AriEvent]) -> None:
        try:
            await expected(left)
        except CallEnded:
            return
        logger.info("call %s: the supervisor hung up", self.context.id)
        await self.end()


def _declined(briefing: asyncio.Future[bool | None]) -> bool:
    """Whether a warm transfer's briefing ended by itself, returning False."""
    return (
        briefing.done()
        and not briefing.cancelled()
        and briefing.exception() is None
        and briefing.result() is False
    )
