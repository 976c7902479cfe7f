"""What a call needs from its telephony system, as a protocol: the backend seam.

A :class:`~voxtra.calls.session.CallSession` does its call control through one
:class:`CallControl`: answer, hang up, play a sound, the media transport (audio in and
out), DTMF out, transfer, record, and the Asterisk-only extras (hold, mute, channel
variables). Asterisk ARI is one implementation
(:class:`~voxtra.calls.asterisk.AsteriskControl`, today's code paths); Twilio Media
Streams is another (``voxtra.twilio``, above the app: nothing here imports it).

DTMF *in* and the end of the call reach the call's
:class:`~voxtra.calls.context.CallContext` from the backend's side
(``context.digit_received``, ``context.mark_ended``), so ``listen_dtmf``, ``gather``
and every wait's :class:`~voxtra.errors.CallEnded` work the same on both.

Outbound calls are the backend's, not a call's: :class:`Originator` (the app's
``originate`` for Asterisk, ``TwilioBackend.originate`` for Twilio).

A backend that cannot do a method raises :class:`~voxtra.errors.NotSupported` naming
the method and the backend; :meth:`CallControl.require` does that for the features
built on Asterisk's objects (bridges, snoops, legs) before they touch ARI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from voxtra.media.transport import MediaTransport
from voxtra.providers.base import STT
from voxtra.recording.app_recordings import RecordingResult
from voxtra.recording.sinks import RecordingSink

__all__ = ["CallControl", "Originator", "RecordOptions"]


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """One recording's options, as ``call.record_start()`` and ``call.record()`` take
    them: one value through the backend seam and into the recorder, so each backend
    reads the same fields (and refuses the ones it cannot do) without repeating the
    signature. The session's keyword API is the user's; this is not checked here (the
    recorder checks names, formats, limits and keys before any request)."""

    name: str = ""
    """The recording's name; empty: one is generated."""
    fmt: str = "wav"
    sink: RecordingSink | None = None
    """Where the file goes; None: the app's recording sink."""
    beep: bool = False
    max_duration: int | None = None
    """Seconds it may run (``record()``'s ``max_length``); None: no limit."""
    max_silence: int | None = None
    """Seconds of silence that end it (``record()``'s ``silence_timeout``)."""
    finish_on_key: str | None = None
    """DTMF keys that end it; None: keys do not."""
    transcribe: STT | None = None
    """``record()`` only: the STT that transcribes the file (None: not transcribed)."""


class CallControl(Protocol):
    """One call's telephony operations. Unsupported ones raise ``NotSupported``."""

    backend: str
    """The backend's name in errors and logs: ``"asterisk"``, ``"twilio"``."""

    def require(self, method: str) -> None:
        """Raise ``NotSupported(method, backend)`` unless the backend does ``method``
        (a feature built on Asterisk's bridges, snoops or legs: ``dial()``...)."""

    async def answer(self) -> None:
        """Answer the call (the context is marked answered)."""

    async def hangup(self, reason: str) -> None:
        """Send the hang-up to the telephony system (the context did the bookkeeping)."""

    async def play(self, names: Sequence[str], *, lang: str | None) -> Any:
        """Start playing sounds back to back; a handle (a ``Playback`` on Asterisk)."""

    async def media(self) -> MediaTransport:
        """The call's media transport (audio in and out), attached on first use."""

    @property
    def transport(self) -> MediaTransport | None:
        """The transport if attached (None before first use)."""

    async def send_dtmf(self, digits: str, *, duration_ms: int, between_ms: int) -> None:
        """Send DTMF to the caller."""

    async def transfer(self, target: str, *, timeout: int, caller_id: str | None) -> None:
        """Blind transfer to ``target`` (the call leaves the app or is bridged away)."""

    async def record_start(self, options: RecordOptions) -> str:
        """Start recording the call; the recording's name."""

    async def record_stop(self) -> str | None:
        """Stop recording and deliver it to its sink; its name, or None if idle."""

    async def record(self, options: RecordOptions) -> RecordingResult:
        """Record until a key, a length (``max_duration``), silence (``max_silence``) or
        the hang-up."""

    async def hold(self, moh_class: str | None) -> None: ...

    async def unhold(self) -> None: ...

    async def ring(self) -> None: ...

    async def mute(self, direction: str) -> None: ...

    async def unmute(self, direction: str) -> None: ...

    async def get_variable(self, name: str) -> str: ...

    async def set_variable(self, name: str, value: str) -> None: ...


@runtime_checkable
class Originator(Protocol):
    """What places an outbound call on a backend: ``VoxtraApp.originate`` (Asterisk,
    ``to`` an endpoint) and ``TwilioBackend.originate`` (``to`` a number). Either
    returns the answered call's session (running ``handler``), or raises ``CallBusy``,
    ``CallNoAnswer`` or ``CallFailed``. Both also take ``on_ringing=`` (called when the
    far end rings), which the platform passes when it has one."""

    async def originate(
        self,
        to: str,
        /,
        *,
        caller_id: str | None = None,
        timeout: int = 30,
        handler: Any = None,
        metadata: Any = None,
    ) -> Any: ...
