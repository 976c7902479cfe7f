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

from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent
from voxtra.calls.context import CallContext, expected
from voxtra.calls.control import RecordOptions
from voxtra.calls.media import CallMedia
from voxtra.calls.playback import Playback, play
from voxtra.calls.recorder import CallRecorder
from voxtra.calls.state import CallState
from voxtra.errors import CallEnded, VariableNotSet
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
            exten, _, rest = target.partition("@")
            dialplan_context, _, priority = rest.partition(":")
            # Set first: StasisEnd can arrive before the response (end_reason reads it).
            context.transferred = True
            try:
                await context.request(
                    context.ari.channels.continue_in_dialplan(
                        context.id,
                        context=dialplan_context or None,
                        extension=exten or None,
                        priority=int(priority) if priority else 1,
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


async def _end_with_leg(context: CallContext, left: asyncio.Future[AriEvent]) -> None:
    """The transfer's leg hung up: the caller, bridged with nobody now, is hung up."""
    try:
        await expected(left)
    except CallEnded:
        return
    logger.info("call %s: the transfer target hung up; ending the call", context.id)
    with contextlib.suppress(CallEnded, AriError):
        await context.hangup()
