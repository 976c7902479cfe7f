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
- digit strings gathered inside (2 digits or more) are replaced by :data:`REDACTED`
  in the call's agent history, now and for the rest of the call, so a tool returning
  them by mistake does not hand them to the LLM.

Nothing here logs a digit; a log line says how many were captured. Entering fails
closed: if Asterisk refuses the pause or the mute, :class:`SecureInputError` is raised
and everything already done is undone before any digit is read.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, SupportsIndex

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent, ChannelDtmfReceived
from voxtra.calls.context import CallContext
from voxtra.errors import CallEnded, VoxtraError
from voxtra.pipeline.agent import Agent
from voxtra.providers.base import ChatMessage

__all__ = ["REDACTED", "RedactingHistory", "SecureInput", "SecureInputError"]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
"""What stands in for a secure digit in events and for gathered digits in the history."""

MIN_SECRET = 2
"""Gathered strings shorter than this are not scrubbed from the history: a single
digit ("press 1") would otherwise erase every "1" the conversation holds."""


class SecureInputError(VoxtraError):
    """Secure input could not start (Asterisk refused to pause the recording or to mute
    the caller); nothing was captured."""


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
        context = self.context
        ari = context.ari
        if mute:
            try:
                await context.request(ari.channels.mute(context.id, "in"))
            except AriError as exc:
                raise SecureInputError(
                    f"call {context.id}: Asterisk refused to mute the caller: {exc}"
                ) from exc
            self.muted = True
        name = self._recording()
        if name is not None:
            try:
                await ari.recordings.pause(name)
            except AriNotFound:
                pass  # it ended meanwhile: nothing records
            except AriError as exc:
                raise SecureInputError(
                    f"call {context.id}: Asterisk refused to pause recording {name!r}: {exc}"
                ) from exc
            else:
                self.paused = name

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
            if self.paused is not None:
                name, self.paused = self.paused, None
                with contextlib.suppress(AriNotFound):  # stopped or hung up meanwhile
                    await context.host.retry_after_outage(
                        lambda: context.ari.recordings.unpause(name)
                    )
            if self.muted:
                self.muted = False
                if not context.ended:
                    with contextlib.suppress(AriNotFound):
                        await context.request(context.ari.channels.unmute(context.id, "in"))
        except (AriError, CallEnded) as exc:
            logger.warning("call %s: ending secure input: %s", context.id, exc)
        finally:
            self._depth = 0
            context.redact_dtmf = None


def _redacted(event: ChannelDtmfReceived) -> AriEvent:
    return event.model_copy(update={"digit": REDACTED})
