"""Secure DTMF capture: a card number or a PIN that reaches only the code asking for it.

``async with call.secure_input(): digits = await call.gather(16)``. While a call is
inside (:class:`SecureInput`):

- its running recording is **paused** (ARI ``POST /recordings/live/{name}/pause``):
  Asterisk leaves the paused span out of the file (measured: see
  ``tests/integration/test_secure_input_asterisk.py``);
- the caller's audio is **muted** in Asterisk (ARI channel mute, direction ``in``):
  Asterisk stops passing it on, so the voice pipeline's STT, a recording, an agent's
  snoop and a connected callee hear neither in-band DTMF tones nor digits read aloud.
  That is what keeps them out of transcripts and pipeline events. RFC 4733 digits
  still arrive (Asterisk mutes voice frames, not DTMF);
- every ``ChannelDtmfReceived`` of the call reaches the call's event waiters (the
  platform's call timeline, ``call.wait_for_event``, a recording's finish key) with its
  digit replaced by :data:`REDACTED`; the digit itself goes only into the call's digit
  queue, which ``gather``/``listen_dtmf`` read;
- the caller's digits are **absorbed** in its bridge: Asterisk passes a caller's
  RFC 4733 digits on to the other channels of the bridge it is in (a callee's phone
  connected with ``connect()`` received every digit of a secure ``gather``, measured on
  Asterisk 22), so the caller is added to that bridge again with ``absorbDTMF`` (ARI
  ``POST /bridges/{id}/addChannel``), and again without it at the end. A bridge the
  caller joins inside the span is not covered: connect it before;
- digit strings gathered inside (2 digits or more) are replaced by :data:`REDACTED`
  in the call's agent history, now and for the rest of the call, so a tool returning
  them by mistake does not hand them to the LLM;
- digits pressed inside and not read there (a 6-digit PIN keyed where 4 were
  gathered) are dropped at the end: the next read after the span used to return them.

Nothing here logs a digit; a log line says how many were captured. Entering fails
closed: if Asterisk refuses the pause, the mute or the absorbing,
:class:`SecureInputError` is raised and everything already done is undone before any
digit is read. Leaving undoes each of them on its own, so one refused leaves none of
the others in place.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from typing import Any, SupportsIndex

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent, ChannelDtmfReceived
from voxtra.calls.context import CallContext
from voxtra.calls.state import INTERNAL_PREFIX
from voxtra.errors import VoxtraError
from voxtra.pipeline.agent import Agent
from voxtra.providers.base import ChatMessage

__all__ = ["REDACTED", "RedactingHistory", "SecureInput", "SecureInputError"]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
"""What stands in for a secure digit in events and for gathered digits in the history."""

MIN_SECRET = 2
"""Gathered strings shorter than this are not scrubbed from the history: a single
digit ("press 1") would otherwise erase every "1" the conversation holds."""

_OWN_MEDIA = (f"{INTERNAL_PREFIX}media-", f"{INTERNAL_PREFIX}snoop-")
"""The app's own media and snoop channels: no party a digit could reach."""


class SecureInputError(VoxtraError):
    """Secure input could not start (Asterisk refused to pause the recording, to mute
    the caller or to absorb its digits in its bridge); nothing was captured."""


class RedactingHistory(list[ChatMessage]):
    """An agent history that replaces the call's secret digit strings by
    :data:`REDACTED` in every message put into it.

    A secret matches as a whole run of DTMF characters (not inside a longer number),
    so ``1234`` is scrubbed from ``"card 1234"`` but not from ``"order 51234"``.
    """

    def __init__(self, messages: Iterable[ChatMessage], secrets: Callable[[], list[str]]):
        self._secrets = secrets
        super().__init__(self._clean(m) for m in messages)

    def _clean(self, message: ChatMessage) -> ChatMessage:
        pattern = _pattern(self._secrets())
        if pattern is None or not pattern.search(message.content):
            return message
        message.content = pattern.sub(REDACTED, message.content)
        return message

    def scrub(self) -> None:
        """Redact every message already held (after a new secret was gathered)."""
        for message in self:
            self._clean(message)

    def append(self, message: ChatMessage) -> None:
        super().append(self._clean(message))

    def insert(self, index: SupportsIndex, message: ChatMessage) -> None:
        super().insert(index, self._clean(message))

    def extend(self, messages: Iterable[ChatMessage]) -> None:
        super().extend(self._clean(m) for m in messages)

    def __iadd__(self, messages: Iterable[ChatMessage]) -> RedactingHistory:  # type: ignore[override,misc]
        self.extend(messages)
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            super().__setitem__(index, [self._clean(m) for m in value])
        else:
            super().__setitem__(index, self._clean(value))


def _pattern(secrets: list[str]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    # Longest first: "12345" is redacted whole, not as "[redacted]5" after "1234".
    alternatives = "|".join(re.escape(s) for s in sorted(set(secrets), key=len, reverse=True))
    return re.compile(rf"(?<![0-9*#A-D])(?:{alternatives})(?![0-9*#A-D])")


class SecureInput:
    """One call's secure-input state: whether it is on, and the secrets gathered."""

    def __init__(self, context: CallContext, *, recording: Callable[[], str | None]) -> None:
        self.context = context
        self._recording = recording
        self._depth = 0
        self.secrets: list[str] = []
        """Digit strings gathered while secure (kept out of the agent's history)."""
        self.paused: str | None = None
        """The recording paused by the current secure span, if any."""
        self.muted = False
        self.absorbing: str | None = None
        """The bridge in which the current secure span absorbs the caller's digits."""

    @property
    def active(self) -> bool:
        return self._depth > 0

    def redact(self, text: str) -> str:
        """``text`` with the call's secrets replaced by :data:`REDACTED`."""
        pattern = _pattern(self.secrets)
        return text if pattern is None else pattern.sub(REDACTED, text)

    def captured(self, digits: str, agent: Agent | None) -> None:
        """``gather`` got ``digits`` while secure: keep them out of the history."""
        if len(digits) < MIN_SECRET:
            return
        self.secrets.append(digits)
        if agent is not None:
            self.guard(agent)

    def guard(self, agent: Agent) -> None:
        """Make ``agent``'s history redact this call's secrets (and scrub it now)."""
        history = agent.history
        if not isinstance(history, RedactingHistory):
            agent.history = RedactingHistory(history, lambda: self.secrets)
        else:
            history.scrub()

    @contextlib.asynccontextmanager
    async def session(self, *, mute: bool = True) -> AsyncIterator[SecureInput]:
        """The secure span (re-entrant: only the outermost pauses and resumes)."""
        context = self.context
        context.check_alive()
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        # Redaction first: a digit pressed while the pause request is on its way is
        # already kept from the waiters.
        context.redact_dtmf = _redacted
        try:
            await self._enter(mute)
        except BaseException:
            await self._leave()
            raise
        logger.info("call %s: secure input on", context.id)
        try:
            yield self
        finally:
            await self._leave()
            logger.info(
                "call %s: secure input off (%d secret(s) held)", context.id, len(self.secrets)
            )

    async def _enter(self, mute: bool) -> None:
        # Each step is marked before its request: one cut off (the block cancelled, an
        # answer lost) may have been done by Asterisk, and is undone all the same. An
        # undo of what was not done is harmless (an unmute of a channel not muted, an
        # unpause of a recording that records).
        context = self.context
        ari = context.ari
        if mute:
            self.muted = True
            try:
                await context.request(ari.channels.mute(context.id, "in"))
            except AriError as exc:
                raise SecureInputError(
                    f"call {context.id}: Asterisk refused to mute the caller: {exc}"
                ) from exc
        name = self._recording()
        if name is not None:
            self.paused = name
            try:
                await ari.recordings.pause(name)
            except AriNotFound:
                self.paused = None  # it ended meanwhile: nothing records
            except AriError as exc:
                raise SecureInputError(
                    f"call {context.id}: Asterisk refused to pause recording {name!r}: {exc}"
                ) from exc
        try:
            bridge = await self._shared_bridge()
            if bridge is not None:
                self.absorbing = bridge
                await context.request(ari.bridges.add_channel(bridge, context.id, absorb_dtmf=True))
        except AriError as exc:
            raise SecureInputError(
                f"call {context.id}: Asterisk refused to absorb the caller's digits in its "
                f"bridge: {exc}"
            ) from exc

    async def _shared_bridge(self) -> str | None:
        """The bridge the caller shares with another party (a callee, a supervisor, a
        dialled leg), if any: the one its digits would be passed on in."""
        context = self.context
        for bridge in await context.request(context.ari.bridges.list()):
            if context.id in bridge.channels and any(
                ch != context.id and not ch.startswith(_OWN_MEDIA) for ch in bridge.channels
            ):
                return bridge.id
        return None

    async def adopt(self, name: str) -> None:
        """A recording ``name`` started while secure: pause it now (resumed at the end).
        The caller is muted meanwhile, so the moment before the pause holds no digit."""
        if not self.active or self.paused is not None:
            return
        try:
            await self.context.ari.recordings.pause(name)
        except AriNotFound:
            return
        except AriError as exc:
            raise SecureInputError(
                f"call {self.context.id}: Asterisk refused to pause recording {name!r}: {exc}"
            ) from exc
        self.paused = name

    async def _leave(self) -> None:
        context = self.context
        try:
            # One undo each: a refused one must not leave the others in place (a failed
            # unpause used to skip the unmute, and the caller stayed muted for the call).
            if self.paused is not None:
                name, self.paused = self.paused, None
                await self._undo("resuming the recording", partial(_unpause, context, name))
            if self.muted:
                self.muted = False
                if not context.ended:
                    await self._undo("unmuting the caller", partial(_unmute, context))
            if self.absorbing is not None:
                bridge, self.absorbing = self.absorbing, None
                if not context.ended:
                    await self._undo(
                        "passing the caller's digits on again", partial(_pass_on, context, bridge)
                    )
        finally:
            self._depth = 0
            # Digits pressed inside and left unread are as secret as those read: the
            # next read after the span would hand them out as ordinary input. Dropped
            # before redaction ends, with no await between: none slips in unredacted.
            context.clear_digits()
            context.redact_dtmf = None

    async def _undo(self, what: str, request: Callable[[], Awaitable[None]]) -> None:
        context = self.context
        try:
            await context.host.retry_after_outage(request)
        except AriNotFound:
            pass  # stopped, left or hung up meanwhile: nothing to undo
        except AriError as exc:
            logger.warning("call %s: ending secure input, %s failed: %s", context.id, what, exc)


async def _unpause(context: CallContext, name: str) -> None:
    await context.ari.recordings.unpause(name)


async def _unmute(context: CallContext) -> None:
    await context.ari.channels.unmute(context.id, "in")


async def _pass_on(context: CallContext, bridge_id: str) -> None:
    """The caller's digits pass in ``bridge_id`` again, if it is still there: adding it
    to a bridge it has left would move it back."""
    bridge = await context.ari.bridges.get(bridge_id)
    if context.id in bridge.channels:
        await context.ari.bridges.add_channel(bridge_id, context.id, absorb_dtmf=False)


def _redacted(event: ChannelDtmfReceived) -> AriEvent:
    return event.model_copy(update={"digit": REDACTED})
