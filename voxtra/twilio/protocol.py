"""Twilio Media Streams messages, sans I/O: parse what Twilio sends, build what we send.

Over the stream's WebSocket every message is one JSON text frame with an ``event``:

- from Twilio: ``connected`` (protocol, version), ``start`` (streamSid, callSid,
  tracks, mediaFormat, customParameters: the ``<Parameter>`` of the TwiML),
  ``media`` (one base64 chunk of mu-law 8 kHz, its track, chunk number and
  timestamp in ms), ``dtmf`` (the digit), ``mark`` (the name of a mark we sent, once
  the audio before it was played, or at once after a ``clear``), ``stop``;
- to Twilio (bidirectional ``<Connect><Stream>``): ``media`` (base64 mu-law 8 kHz),
  ``mark`` (a name echoed when what was sent before it has been played) and
  ``clear`` (drop everything buffered: barge-in).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from voxtra.errors import MediaError

__all__ = [
    "Connected",
    "Dtmf",
    "Mark",
    "MediaChunk",
    "Start",
    "Stop",
    "StreamMessage",
    "TwilioProtocolError",
    "Unknown",
    "clear_message",
    "mark_message",
    "media_message",
    "parse_message",
]


class TwilioProtocolError(MediaError):
    """A Media Streams message that is not JSON or lacks what its event needs."""


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str = "Call"
    version: str = ""


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaChunk:
    payload: bytes
    track: str = "inbound"
    chunk: int = 0
    timestamp_ms: int = 0


DTMF_KEYS = "0123456789*#ABCD"
"""What a ``dtmf`` message's ``digit`` may be (one of them)."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    track: str = "inbound_track"


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str
    message: dict[str, Any]


StreamMessage = Connected | Start | MediaChunk | Dtmf | Mark | Stop | Unknown


def _section(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{message.get('event')!r} message without its {key!r} object")
    return value


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e400 is inf in JSON
        return 0


def _text(value: Any, what: str) -> str:
    """A field Twilio sends as a string (a number is taken as its digits). Anything
    else is refused rather than ``str()``-ed: a nested list could become a "digit" or
    a stream token, and one deep enough makes ``str()`` itself raise."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TwilioProtocolError(f"{what} is not a string")


def _optional(section: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """``section[key]`` if it is a ``kind``; None if absent or null. Any other shape is
    malformed: a ``mediaFormat`` of ``"x"`` or ``tracks`` of ``5`` made the parser
    itself raise (AttributeError, TypeError), not a :class:`TwilioProtocolError`."""
    value = section.get(key)
    if value is not None and not isinstance(value, kind):
        raise TwilioProtocolError(f"{what} is not a JSON {kind.__name__}")
    return value


def parse_message(text: str | bytes) -> StreamMessage:
    """One message from Twilio. Raises :class:`TwilioProtocolError` if it is malformed
    (and nothing else, whatever the text: the stream's socket takes anyone's bytes
    before the stream token is checked)."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise TwilioProtocolError(f"not JSON: {exc}") from None
    except RecursionError:
        # json.loads recurses once per nesting level: "[" * 100000 exhausts the stack.
        raise TwilioProtocolError("not JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise TwilioProtocolError("a message must be a JSON object")
    event = message.get("event")
    if event == "media":
        media = _section(message, "media")
        try:
            payload = base64.b64decode(media.get("payload", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise TwilioProtocolError("media payload is not base64") from None
        return MediaChunk(
            payload,
            _text(media.get("track", "inbound"), "media track"),
            _int(media.get("chunk")),
            _int(media.get("timestamp")),
        )
    if event == "mark":
        return Mark(_text(_section(message, "mark").get("name", ""), "mark name"))
    if event == "dtmf":
        dtmf = _section(message, "dtmf")
        digit = _text(dtmf.get("digit", ""), "dtmf digit")
        if len(digit) != 1 or digit not in DTMF_KEYS:
            return Unknown("dtmf", message)  # not one key: nothing a caller pressed
        return Dtmf(digit, _text(dtmf.get("track", "inbound_track"), "dtmf track"))
    if event == "start":
        return _start(message)
    if event == "stop":
        stop = message.get("stop")
        if not isinstance(stop, dict):
            return Stop()
        return Stop(_text(stop.get("callSid", ""), "stop callSid"))
    if event == "connected":
        return Connected(
            _text(message.get("protocol", ""), "protocol"),
            _text(message.get("version", ""), "version"),
        )
    # Not str(event): a list nested deep enough makes str() itself raise.
    return Unknown(event if isinstance(event, str) else "", message)


def _start(message: dict[str, Any]) -> Start:
    start = _section(message, "start")
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not stream_sid or not call_sid:
        raise TwilioProtocolError("start message without streamSid or callSid")
    media_format = _optional(start, "mediaFormat", dict, "start mediaFormat") or {}
    params = _optional(start, "customParameters", dict, "start customParameters") or {}
    tracks = _optional(start, "tracks", list, "start tracks") or ["inbound"]
    return Start(
        stream_sid=_text(stream_sid, "start streamSid"),
        call_sid=_text(call_sid, "start callSid"),
        account_sid=_text(start.get("accountSid", ""), "start accountSid"),
        tracks=tuple(_text(t, "start track") for t in tracks),
        encoding=_text(media_format.get("encoding", "audio/x-mulaw"), "mediaFormat encoding"),
        sample_rate=_int(media_format.get("sampleRate")) or 8000,
        channels=_int(media_format.get("channels")) or 1,
        # Twilio's <Parameter>s are strings; JSON object keys always are.
        custom_parameters={k: _text(v, f"custom parameter {k!r}") for k, v in params.items()},
    )


def media_message(stream_sid: str, payload: bytes) -> str:
    """Audio for the caller: mu-law 8 kHz, any whole number of bytes."""
    data = base64.b64encode(payload).decode("ascii")
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": data}})


def mark_message(stream_sid: str, name: str) -> str:
    """A mark Twilio echoes once the audio sent before it has been played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """Drop the audio Twilio holds for the caller (its marks come back at once)."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})
