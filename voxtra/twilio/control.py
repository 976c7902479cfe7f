"""A Twilio call's :class:`~voxtra.calls.control.CallControl`: :class:`TwilioCallControl`.

What Twilio does for a call on a Media Stream, and how:

- answer: nothing to send (Twilio connected the stream because the call was answered);
- hang up: REST, the call updated with ``status=completed``; the stream then stops;
- media: the stream itself (:class:`~voxtra.twilio.transport.TwilioMediaTransport`);
- transfer: REST, the call updated with new TwiML, a ``<Dial>`` of the target (a
  number, a ``sip:`` URI or ``client:name``); the stream ends and the call leaves the app;
- record: REST, a recording of the call started and stopped (Twilio's recording API,
  both parties, one channel each), fetched and delivered through the app's recording
  sinks like an Asterisk recording; ``record()`` ends on a key, a length or the hang-up.

What it cannot do raises :class:`~voxtra.errors.NotSupported`: playing Asterisk sound
files, sending DTMF (Media Streams carry no outbound DTMF), hold with music, mute,
channel variables, ``record()``'s silence ending, beep and transcription, and every
feature built on Asterisk's bridges and snoops (dial, connect, bridge_with, secure
input, warm transfer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twilio.twiml.voice_response import Dial, VoiceResponse

from voxtra.calls.context import CallContext
from voxtra.calls.control import RecordOptions
from voxtra.calls.host import CallHost
from voxtra.calls.state import CallEndReason
from voxtra.errors import CallEnded, NotSupported, RecordingError
from voxtra.media.transport import MediaTransport
from voxtra.recording.app_recordings import RecordingEndReason, RecordingResult
from voxtra.recording.naming import validate_recording_name
from voxtra.recording.sinks import RecordingSink
from voxtra.twilio.transport import TwilioMediaTransport

__all__ = ["StartedRecording", "TwilioCallControl", "dial_twiml"]

logger = logging.getLogger(__name__)

BACKEND = "twilio"

_HINTS = {
    "play_file()": "Twilio plays no Asterisk sound files: speak with say() or send_audio()",
    "send_dtmf()": "a Media Stream cannot send DTMF to the caller",
    "hold()": "put the caller on hold with TwiML (<Play> or <Enqueue>) instead",
    "unhold()": "put the caller on hold with TwiML (<Play> or <Enqueue>) instead",
}


def dial_twiml(target: str, *, timeout: int | None = None, caller_id: str | None = None) -> str:
    """The TwiML of a blind transfer: ``<Dial>`` a number, ``sip:`` URI or ``client:``."""
    response = VoiceResponse()
    dial = Dial(timeout=timeout, caller_id=caller_id)
    if target.startswith(("sip:", "sips:")):
        dial.sip(target)
    elif target.startswith("client:"):
        dial.client(target.removeprefix("client:"))
    else:
        dial.number(target)
    response.append(dial)
    return str(response)


@dataclass(frozen=True, slots=True)
class StartedRecording:
    """A recording of a Twilio call as its control started it: Twilio's ``sid``, the
    ``name`` it is delivered under, the ``fmt`` fetched, the ``sink`` (None: the app's)."""

    sid: str
    name: str
    fmt: str
    sink: RecordingSink | None


class TwilioRest(Protocol):
    """What a call's control needs of :class:`~voxtra.twilio.backend.TwilioBackend`."""

    @property
    def host(self) -> CallHost: ...

    async def update_call(self, call_sid: str, **changes: Any) -> None: ...

    async def start_recording(self, call_sid: str) -> str: ...

    async def stop_recording(self, call_sid: str, recording_sid: str) -> None: ...

    async def deliver_recording(
        self, context: CallContext, recording: StartedRecording, *, end_reason: str
    ) -> Any: ...


class TwilioCallControl:
    """One Twilio call's control: REST for the call, the stream for its audio."""

    backend = BACKEND

    def __init__(
        self,
        context: CallContext,
        twilio: TwilioRest,
        call_sid: str,
        transport: TwilioMediaTransport,
    ) -> None:
        self.context = context
        self.twilio = twilio
        self.call_sid = call_sid
        self._transport = transport
        self.recording: StartedRecording | None = None
        """The recording running now, if any."""
        self._starting = False
        self._cleanup_added = False

    def _unsupported(self, method: str) -> NotSupported:
        return NotSupported(method, BACKEND, _HINTS.get(method, ""))

    def require(self, method: str) -> None:
        raise self._unsupported(method)

    async def answer(self) -> None:
        self.context.mark_answered()

    async def hangup(self, reason: str) -> None:
        try:
            await self.twilio.update_call(self.call_sid, status="completed")
        except Exception as exc:  # the stream is closed below either way
            logger.warning("twilio call %s: hang-up request failed: %s", self.call_sid, exc)
        await self._transport.close()
        self.context.mark_ended()

    async def play(self, names: Sequence[str], *, lang: str | None) -> Any:
        raise self._unsupported("play_file()")

    async def media(self) -> MediaTransport:
        self.context.check_alive()
        return self._transport

    @property
    def transport(self) -> MediaTransport | None:
        return self._transport

    async def send_dtmf(self, digits: str, *, duration_ms: int, between_ms: int) -> None:
        raise self._unsupported("send_dtmf()")

    async def transfer(self, target: str, *, timeout: int, caller_id: str | None) -> None:
        context = self.context
        if "@" in target and not target.startswith(("sip:", "sips:")):
            raise NotSupported(
                "transfer_to('exten@context')", BACKEND, "there is no dialplan: give a number"
            )
        context.transferred = True
        twiml = dial_twiml(target, timeout=timeout, caller_id=caller_id)
        try:
            await self.twilio.update_call(self.call_sid, twiml=twiml)
        except BaseException:
            context.transferred = False
            raise
        # Twilio ends the <Connect><Stream> as it runs the new TwiML: the call has left.
        context.end_because(CallEndReason.TRANSFERRED)
        await self._transport.close()
        context.mark_ended()

    async def record_start(self, options: RecordOptions) -> str:
        for option in ("beep", "max_duration", "max_silence", "finish_on_key"):
            if getattr(options, option):
                raise NotSupported(f"record_start({option}=...)", BACKEND)
        fmt, sink = options.fmt, options.sink
        if fmt not in ("wav", "mp3"):
            raise RecordingError(f"Twilio records wav or mp3, not {fmt!r}")
        if options.name:
            # Checked before Twilio records, as on Asterisk (the sinks refuse it at the
            # end otherwise, once the recording is made).
            validate_recording_name(options.name)
        if self.recording is not None or self._starting:
            raise RecordingError(f"call {self.call_sid} is already recording")
        recordings = self.twilio.host.recordings
        if recordings is not None:
            recordings.check_sink(sink)
        # Taken before the request: a second start while it is under way would start a
        # second recording at Twilio, the first never stopped nor delivered.
        self._starting = True
        try:
            sid = await self.twilio.start_recording(self.call_sid)
        finally:
            self._starting = False
        name = options.name or f"{self.call_sid}-{sid}"
        self.recording = StartedRecording(sid, name, fmt, sink)
        if not self._cleanup_added:
            # Stopped and delivered at the end of the call if the handler did not.
            self._cleanup_added = True
            self.context.add_cleanup("recording", self._finish_at_end)
        return name

    async def record_stop(self) -> str | None:
        if self.recording is None:
            return None
        return await self._finish(stop=True)

    async def _finish_at_end(self) -> None:
        await self._finish(stop=True)

    async def _finish(self, stop: bool = True, end_reason: str | None = None) -> str | None:
        recording = self.recording
        if recording is None:
            return None
        self.recording = None
        if end_reason is None:
            end_reason = "stopped" if not self.context.ended else "hangup"
        if stop:
            with contextlib.suppress(Exception):  # a call already ended stopped it
                await self.twilio.stop_recording(self.call_sid, recording.sid)
        await self.twilio.deliver_recording(self.context, recording, end_reason=end_reason)
        return recording.name

    async def record(self, options: RecordOptions) -> RecordingResult:
        """Record until a key of ``finish_on_key``, ``max_length`` seconds or the
        hang-up (Twilio's recording API; the keys come from the stream's DTMF)."""
        # Named as call.record() names them (max_silence is its silence_timeout).
        for option, given in (
            ("silence_timeout", options.max_silence),
            ("beep", options.beep),
            ("transcribe", options.transcribe is not None),
        ):
            if given:
                raise NotSupported(f"record({option}=...)", BACKEND)
        finish_on_key, max_length = options.finish_on_key, options.max_duration
        # The key and the length are watched here, not by Twilio's recording.
        name = await self.record_start(
            replace(options, max_duration=None, max_silence=None, finish_on_key=None)
        )
        context = self.context
        reason: RecordingEndReason = "max_length"
        key: str | None = None
        loop = asyncio.get_running_loop()
        deadline = None if max_length is None else loop.time() + max_length
        try:
            while True:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    break
                digit = await context.next_digit(left)
                if digit is None:
                    break  # max_length
                if finish_on_key and digit in finish_on_key:
                    reason, key = "finish_on_key", digit
                    break
        except CallEnded:
            reason = "hangup"
        # Stopped and delivered now (at the hang-up too: the teardown finds it done).
        await self._finish(stop=True, end_reason=reason)
        return RecordingResult(name, reason, key)

    async def hold(self, moh_class: str | None) -> None:
        raise self._unsupported("hold()")

    async def unhold(self) -> None:
        raise self._unsupported("unhold()")

    async def ring(self) -> None:
        raise self._unsupported("ring()")

    async def mute(self, direction: str) -> None:
        raise self._unsupported("mute()")

    async def unmute(self, direction: str) -> None:
        raise self._unsupported("unmute()")

    async def get_variable(self, name: str) -> str:
        raise self._unsupported("get_variable()")

    async def set_variable(self, name: str, value: str) -> None:
        raise self._unsupported("set_variable()")
