"""The telephony backends the platform places calls through: :class:`CallBackend`.

Asterisk (the app's own ``originate``) and Twilio (``TwilioBackend.originate``) are
each an :class:`~voxtra.calls.control.Originator`. A :class:`CallBackend` holds one and
adds what the platform needs around it, so the call service and the scheduling worker
never ask which backend a call is on:

- :meth:`~CallBackend.target`: what a ``to`` may be there, checked before anything is
  stored (:mod:`voxtra.platform.targets`: an endpoint, number or SIP URI on Asterisk;
  an E.164 number, SIP URI or ``client:`` on Twilio), and what is dialled for it;
- :meth:`~CallBackend.caller_id` and :meth:`~CallBackend.transfer_target`, the same
  for the caller id and a transfer's target;
- :meth:`~CallBackend.originate`: the originate, ``on_ringing`` included; the
  outcomes are the originator's (``CallBusy``, ``CallNoAnswer``, ``CallFailed``);
- :meth:`~CallBackend.hangup_elsewhere`: hang up a call that another worker holds.

Once answered, a call is a :class:`~voxtra.CallSession` on either backend: the
platform's recorder, hang-up and transfer go through the session's own control.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voxtra.app import VoxtraApp
from voxtra.ari.errors import AriError, AriNotFound
from voxtra.calls.control import Originator
from voxtra.calls.session import CallSession
from voxtra.config import PlatformSettings
from voxtra.platform.targets import (
    InvalidTarget,
    dial_target,
    transfer_target,
    twilio_caller_id,
    twilio_target,
)
from voxtra.routing import CallHandler

__all__ = [
    "BACKENDS",
    "AsteriskCallBackend",
    "CallBackend",
    "OriginateRequest",
    "TwilioCallBackend",
    "TwilioRestCalls",
]

BACKENDS = ("asterisk", "twilio")
"""The backends a call, schedule or campaign may name."""


@dataclass(frozen=True)
class OriginateRequest:
    """One outbound call as the platform places it through a :class:`CallBackend`
    (the call service's and the scheduling worker's, one value for both)."""

    target: str
    """What is dialled: :meth:`CallBackend.target` of the stored ``to``."""
    caller_id: str | None = None
    timeout: int = 30
    """Seconds the far end may ring."""
    handler: CallHandler | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    channel_id: str | None = None
    """The call's id picked before it is placed (:meth:`CallBackend.new_channel_id`)."""
    on_ringing: Callable[[], None] | None = None
    """Runs when the far end rings."""

    def extras(self) -> dict[str, Any]:
        """The keywords beyond every originator's own: only those that are set, so an
        originator without them (the worker's plain ``Dialer``, Twilio without a
        channel id of its choosing) is called as before."""
        extras: dict[str, Any] = {}
        if self.channel_id is not None:
            extras["channel_id"] = self.channel_id
        if self.on_ringing is not None:
            extras["on_ringing"] = self.on_ringing
        return extras


class TwilioRestCalls(Originator, Protocol):
    """What the platform uses of ``voxtra.twilio.TwilioBackend``."""

    async def update_call(self, call_sid: str, **changes: Any) -> None: ...


class CallBackend:
    """One telephony backend as the platform uses it (see the module docstring)."""

    name: str = ""

    def __init__(self, originator: Originator) -> None:
        self.originator = originator
        """What places the calls: given :meth:`OriginateRequest.extras` when set (both of
        the platform's take ``on_ringing=``; Asterisk's also ``channel_id=``)."""

    def target(self, to: str, field: str = "to") -> str:
        """What is dialled for ``to``; :class:`~voxtra.platform.targets.InvalidTarget`
        naming ``field`` if this backend cannot dial it."""
        raise NotImplementedError

    def caller_id(self, caller_id: str | None, field: str = "from") -> str | None:
        """The caller id the call goes out with, checked for this backend
        (InvalidTarget naming ``field``); None: the far end's default."""
        return caller_id

    def transfer_target(self, target: str) -> str:
        """A blind transfer's target checked for this backend."""
        raise NotImplementedError

    def new_channel_id(self) -> str | None:
        """The call's id before it is placed, if this backend lets the caller pick it
        (Asterisk: the channel id, known while it rings); None: known at the answer."""
        return None

    async def originate(self, request: OriginateRequest) -> CallSession:
        """Place the call; the answered session, or CallBusy / CallNoAnswer / CallFailed."""
        session: CallSession = await self.originator.originate(
            request.target,
            caller_id=request.caller_id,
            timeout=request.timeout,
            handler=request.handler,
            metadata=request.metadata,
            **request.extras(),
        )
        return session

    async def cancel(self, channel_id: str | None) -> None:
        """After an originate was cancelled while ringing: make sure nothing rings on."""

    async def hangup_elsewhere(self, channel_id: str) -> bool:
        """Hang up a call live on another worker; False if this worker cannot reach it."""
        return False


class AsteriskCallBackend(CallBackend):
    """Asterisk through ARI: ``app.originate``."""

    name = "asterisk"

    def __init__(self, app: VoxtraApp, settings: PlatformSettings) -> None:
        super().__init__(app)
        self.app = app
        self.settings = settings

    def target(self, to: str, field: str = "to") -> str:
        return dial_target(to, self.settings, field)

    def transfer_target(self, target: str) -> str:
        return transfer_target(target, self.settings)

    def new_channel_id(self) -> str:
        return f"voxtra-out-{secrets.token_hex(8)}"

    async def cancel(self, channel_id: str | None) -> None:
        if channel_id is not None:
            with contextlib.suppress(AriError):
                await self.app.ari.channels.hangup(channel_id)

    async def hangup_elsewhere(self, channel_id: str) -> bool:
        # On the same Asterisk, another worker's channel is one ARI request away; that
        # worker sees the hang-up and records the call's end.
        try:
            await self.app.ari.channels.hangup(channel_id)
        except AriNotFound:
            return False
        return True


class TwilioCallBackend(CallBackend):
    """Twilio through its REST API and Media Streams: ``TwilioBackend.originate``."""

    name = "twilio"

    def __init__(self, twilio: TwilioRestCalls, from_number: str | None = None) -> None:
        super().__init__(twilio)
        self.twilio = twilio
        self.from_number = from_number
        """``twilio.from_number``: the caller id when a call names none."""

    def target(self, to: str, field: str = "to") -> str:
        return twilio_target(to, field)

    def caller_id(self, caller_id: str | None, field: str = "from") -> str | None:
        checked = twilio_caller_id(caller_id, field) or self.from_number
        if checked is None:
            raise InvalidTarget(field, "required on Twilio: no twilio.from_number is set")
        return checked

    def transfer_target(self, target: str) -> str:
        return twilio_target(target, "target")

    async def hangup_elsewhere(self, channel_id: str) -> bool:
        # One Twilio account for every worker: the call is one REST request away.
        try:
            await self.twilio.update_call(channel_id, status="completed")
        except Exception:
            return False
        return True
