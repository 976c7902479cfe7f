"""The vocabulary of a call: its direction, state, why it ended, and internal ids."""

from __future__ import annotations

import uuid
from enum import StrEnum

__all__ = [
    "DTMF_KEYS",
    "INTERNAL_PREFIX",
    "CallDirection",
    "CallEndReason",
    "CallState",
    "internal_id",
]

DTMF_KEYS = frozenset("0123456789*#ABCD")
"""The keys a caller can press (what ``ChannelDtmfReceived`` carries)."""

INTERNAL_PREFIX = "voxtra-internal-"
"""Channel ids the app creates for itself (media, snoop, transfer legs): never routed."""


class CallDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallState(StrEnum):
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    FAILED = "failed"


class CallEndReason(StrEnum):
    """Why a call ended (``CallSession.end_reason``)."""

    REMOTE = "remote"
    """Hung up outside the app: the caller, the far end, or Asterisk itself."""
    HANGUP = "hangup"
    """The app hung up (``call.hangup()``, or the handler returned)."""
    MAX_DURATION = "max_call_duration"
    """The call reached ``settings.max_call_duration`` and the app hung it up."""
    SHUTDOWN = "shutdown"
    """The app was stopping and the call outlived the drain deadline."""
    GONE = "gone"
    """The channel was no longer in Asterisk when the app reconnected."""
    TRANSFERRED = "transferred"
    """The call left the app into the dialplan (``transfer_to("exten@context")``)."""


def internal_id(kind: str, instance: str = "") -> str:
    """A new id for a channel or bridge the app creates; ``instance`` marks whose it is.

    ``voxtra-internal-<kind>-<instance>-<random>``: another process serving the same
    Stasis app leaves ids that carry a different instance alone when it reconciles.
    """
    if instance:
        return f"{INTERNAL_PREFIX}{kind}-{instance}-{uuid.uuid4().hex[:12]}"
    return f"{INTERNAL_PREFIX}{kind}-{uuid.uuid4().hex[:12]}"
