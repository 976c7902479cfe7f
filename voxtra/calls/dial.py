"""``call.dial``: connect the caller to another party, the leg owned by the call.

Twilio's ``<Dial>`` as users know it: the app dials one or several targets (at once, or
one after the other), the caller hears ringback meanwhile, the first to answer is
bridged with the caller and the others are hung up, and ``dial`` returns the outcome
once the conversation is over (the leg hung up: the caller is back with the handler;
the caller hung up: the call ends).

Every leg is an internal channel of the call (``CallContext.expect_channel``): whatever
happens (the caller hangs up while it rings, the handler raises, ``dial`` is cancelled,
the app stops), the call's teardown hangs it up. No leg outlives its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from voxtra.ari.errors import AriError
from voxtra.ari.events import AriEvent, ChannelDestroyed, StasisEnd
from voxtra.ari.models import Channel
from voxtra.calls.context import CallContext
from voxtra.calls.playback import Playback, play
from voxtra.calls.registry import PendingOriginate
from voxtra.calls.state import CallState
from voxtra.errors import CallBusy, CallEnded, CallFailed, ConfigError, OriginateError

__all__ = ["DialOutcome", "DialResult", "dial"]

logger = logging.getLogger(__name__)

DialOutcome = Literal["answered", "busy", "no_answer", "failed", "canceled"]

RINGBACK = "tone:ring"
"""Played to an answered caller while the targets ring (Asterisk's indications)."""


@dataclass(frozen=True, slots=True)
class DialResult:
    """How ``call.dial`` ended.

    ``outcome``: ``answered`` (a target answered and was bridged; ``dial`` returned
    when that conversation ended), ``busy``, ``no_answer``, ``failed`` (every target
    failed; ``reason`` says why, as an originate error would), or ``canceled`` (the
    caller hung up first).
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
    """Who hung up first after an answer."""

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"


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
) -> DialResult:
    """Dial ``targets`` and bridge the first to answer with the call (see the module).

    ``timeout`` is per attempt: for all targets at once, or for each in turn when
    ``sequential``. ``caller_id`` defaults to the caller's number.
    """
    context.check_alive()
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names or not all(isinstance(t, str) and "/" in t for t in names):
        raise ConfigError(
            f"dial needs one or more channel endpoints (PJSIP/100, Local/x@ctx), got {targets!r}"
        )
    if timeout <= 0:
        raise ConfigError("dial timeout must be > 0 seconds")
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
            result = await _attempt(context, group, timeout, caller_id, tone)
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
        await _release_losers(context, legs, winner)
        return await _connect(context, winner, tone)
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


async def _connect(context: CallContext, leg: _Leg, tone: Playback | None) -> DialResult:
    """Bridge the caller with the answered leg until one of them leaves."""
    if tone is not None and not tone.done:
        with contextlib.suppress(AriError):
            await tone.stop()
    if context.state is CallState.RINGING:
        await context.request(context.ari.channels.answer(context.id))
        context.mark_answered()
    bridge_id = await context.create_bridge("dial")
    await context.request(context.ari.bridges.add_channel(bridge_id, [context.id, leg.id]))
    began = time.monotonic()
    logger.info("call %s: connected to %s (%s)", context.id, leg.target, leg.id)
    gone = context.expect(
        AriEvent, lambda e: isinstance(e, ChannelDestroyed | StasisEnd) and e.channel_id == leg.id
    )
    waits: set[asyncio.Future[Any]] = {gone, context.gone}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        context.forget(gone)
    talk = time.monotonic() - began
    if context.gone.done():
        return DialResult("answered", leg.target, talk, ended_by="caller")
    # The target hung up: the caller leaves the bridge and is back with the handler.
    with contextlib.suppress(AriError, CallEnded):
        await context.release_bridge(bridge_id)
    return DialResult("answered", leg.target, talk, ended_by="target")
