"""Asterisk ARI as a telephony backend: :class:`AsteriskControl`.

The :class:`~voxtra.calls.control.CallControl` of a call in a Stasis app. Each method
is the code path ``CallSession`` ran before the seam existed: the ARI request through
the call's context (a vanished channel becomes ``CallEnded``), the media path
(:class:`~voxtra.calls.media.CallMedia`), the recorder
(:class:`~voxtra.calls.recorder.CallRecorder`). Asterisk does every method.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from voxtra.ari.errors import AriError, AriNotFound, AriServerError
from voxtra.ari.events import AriEvent
from voxtra.calls.context import CallContext, expected
from voxtra.calls.control import RecordOptions
from voxtra.calls.media import CallMedia
from voxtra.calls.playback import Playback, play
from voxtra.calls.recorder import CallRecorder
from voxtra.calls.state import CallState
from voxtra.errors import CallEnded, InvalidTransferTarget, VariableNotSet
from voxtra.media.transport import MediaTransport
from voxtra.recording.app_recordings import RecordingResult

__all__ = ["AsteriskControl"]

logger = logging.getLogger(__name__)


class AsteriskControl:
    """One call's control through ARI (see the module docstring)."""

    backend = "asterisk"

    def __init__(self, context: CallContext, media: CallMedia) -> None:
        self.context = context
        self.media_path = media
        self.recorder: CallRecorder | None = None
        """The call's recorder, made on first use of recording."""

    def require(self, method: str) -> None:
        """Asterisk does everything."""
        return None

    async def answer(self) -> None:
        context = self.context
        await context.request(context.ari.channels.answer(context.id))
        context.mark_answered()

    async def hangup(self, reason: str) -> None:
        await self.context.hangup_channel(reason)

    async def play(self, names: Sequence[str], *, lang: str | None) -> Playback:
        return await play(self.context, names, lang=lang)

    async def media(self) -> MediaTransport:
        return await self.media_path.get()

    @property
    def transport(self) -> MediaTransport | None:
        return self.media_path.transport

    async def send_dtmf(self, digits: str, *, duration_ms: int, between_ms: int) -> None:
        context = self.context
        await context.request(
            context.ari.channels.send_dtmf(
                context.id, digits, duration=duration_ms, between=between_ms
            )
        )

    async def transfer(self, target: str, *, timeout: int, caller_id: str | None) -> None:
        """``exten@context[:priority]``: ARI ``continue``; an endpoint: a leg of the
        call's own, bridged with the caller once answered (see ``transfer_to``)."""
        context = self.context
        if "/" not in target:
            exten, dialplan_context, priority = _dialplan_target(target)
            await _check_dialplan_target(context, target, dialplan_context, exten, priority)
            # Set first: StasisEnd can arrive before the response (end_reason reads it).
            context.transferred = True
            try:
                await context.request(
                    context.ari.channels.continue_in_dialplan(
                        context.id,
                        context=dialplan_context or None,
                        extension=exten or None,
                        priority=priority,
                    )
                )
            except BaseException:
                context.transferred = False
                raise
            return
        leg = await context.dial_leg(
            target, timeout=timeout, caller_id=caller_id or context.caller_id or None
        )
        left = context.expect_leaving(leg)
        try:
            bridge_id = await context.create_bridge("transfer")
            await context.request(context.ari.bridges.add_channel(bridge_id, [context.id, leg]))
        except BaseException:
            context.forget(left)
            raise
        context.transferred = True
        # The handler may return now: caller and leg stay bridged until one hangs up (the
        # caller's hang-up releases the leg, a channel of the call's). Before, the app
        # waited 10 s for the call to end, then hung the leg up and left the caller alone
        # in Stasis.
        context.handed_off = True
        context.spawn(_end_with_leg(context, left), name=f"voxtra-transfer-{context.id}")

    def recorder_for_call(self) -> CallRecorder:
        if self.recorder is None:
            self.recorder = CallRecorder(self.context)
        return self.recorder

    async def record_start(self, options: RecordOptions) -> str:
        return await self.recorder_for_call().start(options)

    async def record_stop(self) -> str | None:
        if self.recorder is None:
            return None
        return await self.recorder.stop()

    async def record(self, options: RecordOptions) -> RecordingResult:
        return await self.recorder_for_call().record(options)

    async def hold(self, moh_class: str | None) -> None:
        context = self.context
        await context.request(context.ari.channels.start_moh(context.id, moh_class))
        context.state = CallState.ON_HOLD

    async def unhold(self) -> None:
        context = self.context
        await context.request(context.ari.channels.stop_moh(context.id))
        context.state = CallState.IN_PROGRESS

    async def ring(self) -> None:
        await self.context.request(self.context.ari.channels.ring(self.context.id))

    async def mute(self, direction: str) -> None:
        context = self.context
        await context.request(context.ari.channels.mute(context.id, direction))  # type: ignore[arg-type]

    async def unmute(self, direction: str) -> None:
        context = self.context
        await context.request(context.ari.channels.unmute(context.id, direction))  # type: ignore[arg-type]

    async def get_variable(self, name: str) -> str:
        context = self.context
        try:
            return str(await context.request(context.ari.channels.get_variable(context.id, name)))
        except AriNotFound:
            # A 404 that is not about the channel (``request`` made that one CallEnded):
            # Asterisk 22's "Provided variable was not found", the call goes on.
            raise VariableNotSet(context.id, name) from None

    async def set_variable(self, name: str, value: str) -> None:
        context = self.context
        await context.request(context.ari.channels.set_variable(context.id, name, value))


def _dialplan_target(target: str) -> tuple[str, str, int]:
    """``exten@context[:priority]`` as (extension, context, priority); either name may
    be empty (Asterisk fills it in), the priority is 1 unless given."""
    exten, _, rest = target.partition("@")
    dialplan_context, _, priority = rest.partition(":")
    if not exten and not dialplan_context:
        raise InvalidTransferTarget(
            target, "names no extension or context (exten@context[:priority], or an endpoint)"
        )
    if priority and not (priority.isascii() and priority.isdigit() and int(priority) > 0):
        # It was int(priority): a raw ValueError from inside transfer_to().
        raise InvalidTransferTarget(target, f"the priority {priority!r} is not a number from 1")
    return exten, dialplan_context, int(priority) if priority else 1


async def _check_dialplan_target(
    context: CallContext, target: str, dialplan_context: str, exten: str, priority: int
) -> None:
    """Raise InvalidTransferTarget unless the dialplan has where ``continue`` would send
    the call.

    Asterisk 22 answers 204 to a ``continue`` into a context, extension or priority its
    dialplan lacks; the channel leaves the app and Asterisk hangs it up (cause 0), so the
    caller was lost while the handler saw a transfer that worked (measured on the
    sandbox for each of the three). ARI has no dialplan API, but a channel can evaluate
    ``DIALPLAN_EXISTS()`` (func_dialplan), which matches patterns as the PBX does
    (``1234@from-sip`` is found through ``_X.``). Where Asterisk cannot evaluate it (the module not
    loaded: a 500), the call is continued unchecked, as before.
    """
    # The blanks as ARI's continue fills them: no context is the channel's own (and
    # its extension unless one is given); a context without an extension is its "s".
    here = context.channel.dialplan
    where_context = dialplan_context or here.context
    where_exten = exten or ("s" if dialplan_context else here.exten)
    if not (where_context and where_exten):
        return  # a channel whose location ARI did not give: nothing to check against
    if await _dialplan_has(context, where_context, where_exten, priority) is not False:
        return
    if await _dialplan_has(context, where_context) is False:
        raise InvalidTransferTarget(target, f"Asterisk's dialplan has no context {where_context!r}")
    if await _dialplan_has(context, where_context, where_exten, 1) is False:
        # An extension missing at priority 1 goes to the context's "i" (invalid) or
        # "e" (exception) extension when it has one (__ast_pbx_run in main/pbx.c; the
        # sandbox's dialplan has neither to measure): the dialplan takes the call.
        for handler in ("i", "e"):
            if await _dialplan_has(context, where_context, handler, 1):
                return
        raise InvalidTransferTarget(
            target,
            f"the dialplan context {where_context!r} has no extension {where_exten!r}",
        )
    raise InvalidTransferTarget(
        target,
        f"the extension {where_exten!r} of the dialplan context {where_context!r} has "
        f"no priority {priority}",
    )


async def _dialplan_has(context: CallContext, *where: str | int) -> bool | None:
    """Whether the dialplan has ``where`` (context[, extension[, priority]]), asked
    through the call's channel; None when Asterisk cannot evaluate DIALPLAN_EXISTS (a
    500: func_dialplan not loaded)."""
    function = f"DIALPLAN_EXISTS({','.join(str(part) for part in where)})"
    try:
        value = await context.request(context.ari.channels.get_variable(context.id, function))
    except AriServerError:
        return None
    return value == "1"


async def _end_with_leg(context: CallContext, left: asyncio.Future[AriEvent]) -> None:
    """The transfer's leg hung up: the caller, bridged with nobody now, is hung up."""
    try:
        await expected(left)
    except CallEnded:
        return
    logger.info("call %s: the transfer target hung up; ending the call", context.id)
    with contextlib.suppress(CallEnded, AriError):
        await context.hangup()
