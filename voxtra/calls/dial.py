"""``call.dial``: connect the caller to another party, the leg owned by the call.

Twilio's ``<Dial>`` as users know it: the app dials one or several targets (at once, or
one after the other), the caller hears ringback meanwhile, the first to answer is
bridged with the caller and the others are hung up, and ``dial`` returns the outcome
once the conversation is over (the leg hung up: the caller is back with the handler;
the caller hung up: the call ends).

Every leg is an internal channel of the call (``CallContext.expect_channel``): whatever
happens (the caller hangs up while it rings, the handler raises, ``dial`` is cancelled,
the app stops), the call's teardown hangs it up. No leg outlives its call. A ``dial``
cancelled while the caller still is on the call (a time limit around it) also hangs up
its legs at once, the one the caller talks to included, and the caller is back in the
bridge it was in: the handler goes on, so nothing of the dial may go on with it.

Transfer keys (``transfer_keys=``): the person who answered transfers the caller with
its phone's keys, an attended transfer run by the app, because Asterisk does not apply
its own feature codes (features.conf ``atxfer``) in the bridges an ARI app makes
(measured on 22.10.1: docs/three-party.md). The bridge is then a ``dtmf_events`` one,
so Asterisk reads the digits (a plain mixing bridge of two phones goes native RTP and
the digits never reach the app); that person's digits are absorbed, not passed on.
``*2``, a number, ``#``: the caller waits with music on hold in the dial bridge, the
person moves to a consultation bridge and the number is dialled into it (a leg of this
call). The person hanging up completes the transfer (the caller joins the target);
the target hanging up or not answering brings the person back to the caller. The new
party may transfer again the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent, ChannelDtmfReceived
from voxtra.ari.models import Channel
from voxtra.calls.context import CallContext
from voxtra.calls.playback import Playback, play
from voxtra.calls.registry import PendingOriginate
from voxtra.calls.state import CallState
from voxtra.errors import CallBusy, CallEnded, CallFailed, ConfigError, OriginateError

__all__ = ["DialOutcome", "DialResult", "TransferKeys", "dial"]

logger = logging.getLogger(__name__)

DialOutcome = Literal["answered", "busy", "no_answer", "failed", "canceled"]

RINGBACK = "tone:ring"
"""Played to an answered caller while the targets ring (Asterisk's indications)."""


@dataclass(frozen=True, slots=True)
class DialResult:
    """How ``call.dial`` ended.

    ``outcome``: ``answered`` (a target answered and was bridged; ``dial`` returned
    when that conversation ended; one that hung up before it was bridged is
    ``answered`` too, ``ended_by`` ``target`` with no talk time), ``busy``,
    ``no_answer``, ``failed`` (every target failed; ``reason`` says why, as an
    originate error would), or ``canceled`` (the caller hung up first).
    """

    outcome: DialOutcome
    target: str | None = None
    """The target that answered (``answered``), else the last one tried."""
    talk_time: float = 0.0
    """Seconds the caller and the target were connected."""
    cause: int | None = None
    """Asterisk's hangup cause of the (last) failed leg."""
    reason: str = ""
    """What went wrong, with what to check when Voxtra can tell."""
    ended_by: Literal["caller", "target", ""] = ""
    """Who hung up first after an answer (``target``: the last party the caller talked
    to, a transfer's target included)."""
    transferred_to: tuple[str, ...] = ()
    """The endpoints the caller was transferred to with :class:`TransferKeys`, in order."""

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"


@dataclass(frozen=True, slots=True)
class TransferKeys:
    """Let the person who answered transfer the caller with its keys (see the module).

    ``start`` + number + ``end`` (``*2 5083 #``) dials ``endpoint`` with ``{number}``
    replaced, ringing for ``ring_time`` seconds.
    """

    endpoint: str = "PJSIP/{number}"
    start: str = "*2"
    end: str = "#"
    ring_time: int = 30

    def __post_init__(self) -> None:
        if "{number}" not in self.endpoint or "/" not in self.endpoint:
            raise ConfigError(
                f"TransferKeys endpoint must be a channel endpoint with {{number}}, "
                f"not {self.endpoint!r}"
            )
        if not self.start or not self.end or self.end.isdigit() or self.start.isdigit():
            raise ConfigError("TransferKeys start and end must be keys other than digits only")
        if self.ring_time <= 0:
            raise ConfigError("TransferKeys ring_time must be > 0 seconds")


class _Leg:
    """One dialed target: its channel, watched as an originate (the app maps its Dial
    status and hangup cause to busy / no answer / failed, as for ``originate()``)."""

    def __init__(self, context: CallContext, target: str) -> None:
        self.target = target
        self.id = context.host.internal_id("leg")
        self.started = context.expect_channel(self.id)
        self.watch = PendingOriginate(target)
        context.host.registry.originates[self.id] = self.watch
        self.error = ""

    @property
    def ended(self) -> asyncio.Future[Channel]:
        """Done with the leg's outcome as an exception once it ended unanswered."""
        return self.watch.future

    def outcome(self) -> tuple[DialOutcome, int | None, str]:
        """Busy, no answer or failed, from how the leg ended."""
        if self.error:
            return "failed", None, self.error
        error = self.ended.exception() if self.ended.done() else None
        if isinstance(error, CallBusy):
            return "busy", error.cause, str(error)
        if isinstance(error, CallFailed):
            return "failed", error.cause, str(error)
        cause = error.cause if isinstance(error, OriginateError) else None
        return "no_answer", cause, str(error) if error else f"{self.target}: no answer"


async def dial(
    context: CallContext,
    targets: str | Sequence[str],
    *,
    timeout: float = 30.0,
    caller_id: str | None = None,
    ringback: bool = True,
    sequential: bool = False,
    transfer_keys: TransferKeys | bool | None = None,
) -> DialResult:
    """Dial ``targets`` and bridge the first to answer with the call (see the module).

    ``timeout`` is per attempt: for all targets at once, or for each in turn when
    ``sequential``. ``caller_id`` defaults to the caller's number. ``transfer_keys``
    (True for the defaults, or a :class:`TransferKeys`) lets the one who answers
    transfer the caller with its keys.
    """
    context.check_alive()
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names or not all(isinstance(t, str) and "/" in t for t in names):
        raise ConfigError(
            f"dial needs one or more channel endpoints (PJSIP/100, Local/x@ctx), got {targets!r}"
        )
    if timeout <= 0:
        raise ConfigError("dial timeout must be > 0 seconds")
    keys = TransferKeys() if transfer_keys is True else transfer_keys or None
    caller_id = caller_id or context.caller_id or None
    groups = [[name] for name in names] if sequential else [names]
    result = DialResult("no_answer", names[-1])
    tone: Playback | None = None
    try:
        if ringback and context.state is not CallState.RINGING:
            tone = await play(context, [RINGBACK])
        elif ringback:
            await context.request(context.ari.channels.ring(context.id))
        for group in groups:
            result = await _attempt(context, group, timeout, caller_id, tone, keys)
            if result.outcome in ("answered", "canceled"):
                break
        return result
    finally:
        if tone is not None and not tone.done:
            with contextlib.suppress(AriError, CallEnded):
                await tone.stop()


async def _attempt(
    context: CallContext,
    group: list[str],
    timeout: float,
    caller_id: str | None,
    tone: Playback | None,
    keys: TransferKeys | None = None,
) -> DialResult:
    """Ring ``group`` at once; bridge the first to answer; the others are hung up."""
    legs = [_Leg(context, target) for target in group]
    winner: _Leg | None = None
    try:
        for leg in legs:
            try:
                await context.ari.channels.originate(
                    leg.target,
                    app=context.host.app_name,
                    app_args="voxtra-internal",
                    channel_id=leg.id,
                    caller_id=caller_id,
                    timeout=max(1, round(timeout)),
                    originator=context.id,
                )
            except AriError as exc:
                leg.error = f"{leg.target}: originate refused: {exc}"
        winner = await _first_answer(context, legs, timeout)
        if winner is None:
            if context.ended:
                return DialResult("canceled", group[-1], reason="the caller hung up")
            return _failure(legs)
        # Registered before any other await: the target may hang up at once, while the
        # app still sets up (its hang-up then reached no waiter and dial() never ended).
        left = context.expect_leaving(winner.id)
        try:
            await _release_losers(context, legs, winner)
            if keys is not None:
                return await _connect_with_keys(context, winner, left, tone, keys, caller_id)
            return await _connect(context, winner, left, tone)
        except BaseException:
            # Cancelled after the answer, before the caller talks to it (or after, the
            # bridge then taken down by _end_talk): not left up, unbridged, in the app.
            if not context.ended and winner.id in context.channels:
                with contextlib.suppress(AriError, CallEnded):
                    await context.release_channel(winner.id)
            raise
        finally:
            context.forget(left)
    finally:
        for leg in legs:
            context.host.registry.originates.pop(leg.id, None)
        await _release_losers(context, legs, winner)


async def _release_losers(context: CallContext, legs: list[_Leg], winner: _Leg | None) -> None:
    """Hang up every leg but the winner (at once: they must not ring on)."""
    for leg in legs:
        if leg is not winner and leg.id in context.channels:
            with contextlib.suppress(AriError):
                await context.release_channel(leg.id)


async def _first_answer(context: CallContext, legs: list[_Leg], timeout: float) -> _Leg | None:
    """The first leg in Stasis (answered); None once all ended, the caller hung up, or
    ``timeout`` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout + 1.0  # Asterisk's own originate timeout comes first
    live = [leg for leg in legs if not leg.error]
    while live:
        waits: set[asyncio.Future[Any]] = {context.gone}
        for leg in live:
            waits.add(leg.started)
            waits.add(leg.ended)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if context.gone.done():
            return None
        for leg in live:
            started = leg.started
            if started.done() and not started.cancelled() and started.exception() is None:
                return leg
        live = [leg for leg in live if not leg.ended.done() and not leg.started.done()]
    return None


def _failure(legs: list[_Leg]) -> DialResult:
    """The attempt's outcome when nobody answered: busy if any target was busy, else
    no answer if any rang out, else failed."""
    found = [(leg, *leg.outcome()) for leg in legs]
    for wanted in ("busy", "no_answer", "failed"):
        for leg, outcome, cause, reason in found:
            if outcome == wanted:
                return DialResult(outcome, leg.target, cause=cause, reason=reason)
    return DialResult("failed", legs[-1].target)


async def _connect(
    context: CallContext, leg: _Leg, left: asyncio.Future[AriEvent], tone: Playback | None
) -> DialResult:
    """Bridge the caller with the answered leg until one of them leaves (``left``: the
    leg's leaving, watched since it answered)."""
    await _ready(context, tone)
    home = await _caller_bridge(context)
    bridge_id = await context.create_bridge("dial")
    try:
        await context.request(context.ari.bridges.add_channel(bridge_id, [context.id, leg.id]))
    except AriError:
        # Refused as a whole (400 "Channel not found"): the caller did not move.
        if not await context.has_left(leg.id, left):
            raise
        with contextlib.suppress(AriError, CallEnded):
            await context.release_bridge(bridge_id)
        return _hung_up_before(leg)
    except BaseException:
        # Cancelled while Asterisk moved them (it may have): as a cancel while talking.
        await _end_talk(context, leg.id, bridge_id, home)
        raise
    began = time.monotonic()
    logger.info("call %s: connected to %s (%s)", context.id, leg.target, leg.id)
    # Gone while the bridge was made: its event came before the answer to addChannel.
    if not context.seen_leaving(leg.id, left):
        waits: set[asyncio.Future[Any]] = {left, context.gone}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _end_talk(context, leg.id, bridge_id, home)
            raise
    talk = time.monotonic() - began
    if context.gone.done():
        return DialResult("answered", leg.target, talk, ended_by="caller")
    # The target hung up: the caller leaves the bridge and is back with the handler.
    with contextlib.suppress(AriError, CallEnded):
        await context.release_bridge(bridge_id)
    await _back_home(context, home)
    return DialResult("answered", leg.target, talk, ended_by="target")


async def _ready(context: CallContext, tone: Playback | None) -> None:
    """The ringback stopped and the caller answered, before it joins the target."""
    if tone is not None and not tone.done:
        with contextlib.suppress(AriError):
            await tone.stop()
    if context.state is CallState.RINGING:
        await context.request(context.ari.channels.answer(context.id))
        context.mark_answered()


async def _end_talk(context: CallContext, party: str, bridge_id: str, home: str | None) -> None:
    """``dial`` cancelled (or failed) while the caller talks to ``party`` in ``bridge_id``,
    the caller still on the call: the party is hung up, the bridge destroyed and the
    caller back home. Left to the call's teardown, they went on talking while the
    handler went on (measured on 22.10.1: 1 s after ``wait_for(call.dial(...), 2)``
    had raised, the leg was Up in the dial bridge and its SIP phone still talking; a
    transfer's target rang on, its dialling task left behind)."""
    if context.ended:
        return  # the call's teardown hangs up what it owns
    with contextlib.suppress(AriError, CallEnded):
        await context.release_channel(party)
    with contextlib.suppress(AriError, CallEnded):
        await context.release_bridge(bridge_id)
    await _back_home(context, home)


def _hung_up_before(leg: _Leg) -> DialResult:
    """The answered target hung up before the caller was connected to it."""
    logger.info("call %s: %s hung up before it was connected", leg.id, leg.target)
    return DialResult(
        "answered",
        leg.target,
        ended_by="target",
        reason=f"{leg.target} hung up before it was connected",
    )


async def _caller_bridge(context: CallContext) -> str | None:
    """The bridge of this call the caller is in before the dial moves it: the media
    bridge when the handler has audio (``say``, ``audio_stream``), so the caller goes
    back to it once the target hangs up (:func:`_back_home`). None if it is in none."""
    # Asked of Asterisk, not of CallMedia: the dial reaches the call through its
    # context only, and Asterisk knows where the caller is whoever put it there.
    for bridge_id in sorted(context.bridges):
        with contextlib.suppress(AriNotFound):  # destroyed meanwhile: not the one
            bridge = await context.request(context.ari.bridges.get(bridge_id))
            if context.id in bridge.channels:
                return bridge_id
    return None


async def _back_home(context: CallContext, home: str | None) -> None:
    """The caller, still on the call, back in the bridge it was in before the dial.
    Adding it to the dial's bridge moved it out of that one, and destroying the dial's
    bridge left it in none: the handler's next ``say()`` went nowhere, silently (the
    media path, already attached, does not bridge the caller again)."""
    if home is None or context.gone.done():
        return
    try:
        await context.request(context.ari.bridges.add_channel(home, context.id))
    except AriError as exc:
        logger.warning(
            "call %s: the caller could not go back to bridge %s after the dial: %s",
            context.id,
            home,
            exc,
        )
    except CallEnded:
        pass  # hung up meanwhile: nowhere to go back to


async def _connect_with_keys(
    context: CallContext,
    leg: _Leg,
    left: asyncio.Future[AriEvent],
    tone: Playback | None,
    keys: TransferKeys,
    caller_id: str | None,
) -> DialResult:
    """As :func:`_connect`, and the party the caller talks to may transfer it by keys.
    ``left`` (the leg's leaving) is forgotten by the caller, the watches of the parties
    the caller is transferred to here."""
    await _ready(context, tone)
    digits: dict[str, asyncio.Queue[str]] = {}

    def collect(event: ChannelDtmfReceived) -> bool:
        digits.setdefault(event.channel.id, asyncio.Queue()).put_nowait(event.digit)
        return False  # never done: every digit of the call's parties, for the whole talk

    # Before the leg joins: a key pressed at once is kept.
    keys_waiter = context.expect(ChannelDtmfReceived, collect)
    watching = left  # the watch of the party the caller talks to: kept across the loop
    try:
        home = await _caller_bridge(context)
        bridge_id = await _keys_bridge(context, "dial")
        try:
            await context.request(context.ari.bridges.add_channel(bridge_id, context.id))
            await context.request(
                context.ari.bridges.add_channel(bridge_id, leg.id, absorb_dtmf=True)
            )
        except AriError:
            if not await context.has_left(leg.id, left):
                raise
            # The caller is in the dial bridge already: back where it was.
            with contextlib.suppress(AriError, CallEnded):
                await context.release_bridge(bridge_id)
            await _back_home(context, home)
            return _hung_up_before(leg)
        except BaseException:
            # Cancelled while the caller (and the party) moved in: as while talking.
            await _end_talk(context, leg.id, bridge_id, home)
            raise
        began = time.monotonic()
        logger.info(
            "call %s: connected to %s (%s), transfer keys on", context.id, leg.target, leg.id
        )
        current, current_target = leg.id, leg.target
        transferred: list[str] = []
        while True:
            number = asyncio.ensure_future(
                _read_number(digits.setdefault(current, asyncio.Queue()), keys)
            )
            # A party gone while set up or while a transfer completed: its event came
            # before this wait, to the watch kept since it answered.
            if not context.seen_leaving(current, watching):
                waits: set[asyncio.Future[Any]] = {watching, number, context.gone}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                except BaseException:
                    await _end_talk(context, current, bridge_id, home)
                    raise
                finally:
                    number.cancel()
            else:
                number.cancel()
            if context.gone.done():
                return DialResult(
                    "answered",
                    current_target,
                    time.monotonic() - began,
                    ended_by="caller",
                    transferred_to=tuple(transferred),
                )
            if context.seen_leaving(current, watching):
                with contextlib.suppress(AriError, CallEnded):
                    await context.release_bridge(bridge_id)
                await _back_home(context, home)
                return DialResult(
                    "answered",
                    current_target,
                    time.monotonic() - began,
                    ended_by="target",
                    transferred_to=tuple(transferred),
                )
            endpoint = keys.endpoint.replace("{number}", number.result())
            try:
                moved = await _consult(context, bridge_id, current, endpoint, keys, caller_id)
            except CallEnded:
                moved = "gone"
            except BaseException:
                # The caller waits on hold in bridge_id, the transferer (current) in the
                # consultation, which _consult took down with the target.
                await _end_talk(context, current, bridge_id, home)
                raise
            if moved == "gone":
                ended_by: Literal["caller", "target"] = "caller" if context.ended else "target"
                if not context.ended:
                    with contextlib.suppress(AriError, CallEnded):
                        await context.release_bridge(bridge_id)
                    await _back_home(context, home)
                return DialResult(
                    "answered",
                    current_target,
                    time.monotonic() - began,
                    ended_by=ended_by,
                    transferred_to=tuple(transferred),
                )
            if moved != "back":
                bridge_id, current, watch = moved
                if watching is not left:
                    context.forget(watching)
                watching = watch
                current_target = endpoint
                transferred.append(endpoint)
    finally:
        context.forget(keys_waiter)
        if watching is not left:
            context.forget(watching)


async def _read_number(queue: asyncio.Queue[str], keys: TransferKeys) -> str:
    """The number of the first ``start`` + digits + ``end`` the queue's digits spell."""
    pressed = ""
    while True:
        pressed += await queue.get()
        if keys.start not in pressed:
            pressed = pressed[-len(keys.start) :]
            continue
        after = pressed.split(keys.start)[-1]
        if after.endswith(keys.end):
            number = after[: -len(keys.end)]
            if number.isdigit():
                return number
            pressed = ""
        elif after and not after.isdigit():
            pressed = after[-len(keys.start) :]


async def _consult(
    context: CallContext,
    bridge_id: str,
    transferer: str,
    endpoint: str,
    keys: TransferKeys,
    caller_id: str | None,
) -> tuple[str, str, asyncio.Future[AriEvent]] | Literal["back", "gone"]:
    """The attended transfer from ``transferer``: the caller on hold in ``bridge_id``,
    the transferer with ``endpoint`` in a consultation bridge. Returns the bridge the
    caller is in now, who it talks to and the watch of that party's leaving (for the
    caller to forget) once it completed (the transferer hung up, also while the target
    rang); ``back`` if it did not (the target is busy, does not
    answer or hangs up: the transferer is back with the caller); ``gone`` if the
    transferer hung up and the target did not answer (nobody is left for the caller).
    CallEnded if the caller hangs up."""
    logger.info("call %s: %s transfers the caller to %s", context.id, transferer, endpoint)
    consult = await _keys_bridge(context, "consult")
    gone_transferer = context.expect_leaving(transferer)
    gone_target: asyncio.Future[AriEvent] | None = None
    dialing: asyncio.Future[str] | None = None
    target: str | None = None
    kept = False
    try:
        await context.request(
            context.ari.bridges.add_channel(consult, transferer, absorb_dtmf=True)
        )
        await context.request(context.ari.bridges.start_moh(bridge_id))
        dialing = asyncio.ensure_future(
            context.dial_leg(endpoint, timeout=keys.ring_time, caller_id=caller_id)
        )
        racing: set[asyncio.Future[Any]] = {dialing, context.gone}
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if not dialing.done():
            dialing.cancel()  # dial_leg hangs its leg up on the way out
            with contextlib.suppress(BaseException):
                await dialing
        context.check_alive()
        try:
            target = dialing.result()
        except (OriginateError, AriError) as exc:
            logger.info("call %s: transfer to %s failed: %s", context.id, endpoint, exc)
            # The task this frame holds keeps it: without its traceback, no cycle.
            exc.__traceback__ = None
            await _abort(context, bridge_id, consult, transferer, gone_transferer.done())
            return "gone" if gone_transferer.done() else "back"
        gone_target = context.expect_leaving(target)
        if target not in context.channels:  # gone before its watch: dial_leg awaited
            await _abort(context, bridge_id, consult, transferer, gone_transferer.done())
            return "gone" if gone_transferer.done() else "back"
        if not gone_transferer.done():
            await context.request(
                context.ari.bridges.add_channel(consult, target, absorb_dtmf=True)
            )
            talking: set[asyncio.Future[Any]] = {gone_transferer, gone_target, context.gone}
            await asyncio.wait(talking, return_when=asyncio.FIRST_COMPLETED)
            context.check_alive()
            if gone_target.done():
                await _abort(context, bridge_id, consult, transferer, gone_transferer.done())
                return "gone" if gone_transferer.done() else "back"
        # Completed: the caller joins the target (a move: no removeChannel needed).
        with contextlib.suppress(AriError):
            await context.request(context.ari.bridges.stop_moh(bridge_id))
        try:
            await context.request(context.ari.bridges.add_channel(consult, [context.id, target]))
        except AriError:
            # Refused as a whole: the target hung up too, the caller is still on hold.
            if not await context.has_left(target, gone_target):
                raise
            await _abort(context, bridge_id, consult, transferer, True)
            return "gone"
        with contextlib.suppress(AriError, CallEnded):
            await context.release_bridge(bridge_id)
        logger.info("call %s: transferred to %s (%s)", context.id, endpoint, target)
        # The watch goes on: the target may hang up before the caller's loop waits.
        kept = True
        return consult, target, gone_target
    except BaseException:
        # Cancelled (or refused) midway, the caller still on the call: the target, ringing
        # or talking, and the consultation end with it; the task dialling the target
        # would otherwise ring on, and bridge nobody, once it answered.
        if dialing is not None and not dialing.done():
            dialing.cancel()  # dial_leg hangs its leg up on the way out
            with contextlib.suppress(BaseException):
                await dialing
        if not context.ended:
            if target is not None:
                with contextlib.suppress(AriError, CallEnded):
                    await context.release_channel(target)
            with contextlib.suppress(AriError, CallEnded):
                await context.release_bridge(consult)
        raise
    finally:
        context.forget(gone_transferer)
        if gone_target is not None and not kept:
            context.forget(gone_target)


async def _abort(
    context: CallContext, bridge_id: str, consult: str, transferer: str, transferer_gone: bool
) -> None:
    """The transfer did not happen: the transferer back with the caller (if it is still
    on the call), the music stopped, the consultation bridge gone."""
    with contextlib.suppress(AriError):
        await context.request(context.ari.bridges.stop_moh(bridge_id))
    if not transferer_gone:
        with contextlib.suppress(AriError):
            await context.request(
                context.ari.bridges.add_channel(bridge_id, transferer, absorb_dtmf=True)
            )
    with contextlib.suppress(AriError, CallEnded):
        await context.release_bridge(consult)


async def _keys_bridge(context: CallContext, kind: str) -> str:
    """A mixing bridge of the call that hands Asterisk every digit (``dtmf_events``: a
    plain one of two phones goes native RTP and the digits never reach the app)."""
    bridge = await context.ari.bridges.create(
        "mixing,dtmf_events", bridge_id=context.host.internal_id(kind)
    )
    context.bridges.add(bridge.id)
    context.host.registry.own_bridge(bridge.id, context)
    return bridge.id
