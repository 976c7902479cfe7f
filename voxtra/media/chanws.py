"""Asterisk chan_websocket control protocol (Asterisk 20.16+/22.6+), sans-IO.

Audio travels in BINARY frames; control travels in TEXT frames, in one of two formats
chosen on the Asterisk side (chan_websocket.conf or the ``f()`` dial option):

* plain text (the default, deprecated):
  ``MEDIA_START connection_id:abc channel:WebSocket/x format:ulaw optimal_frame_size:160``;
  parameters are ``key:value`` tokens, or a bare id (``STOP_MEDIA_BUFFERING <id>``);
* JSON (22.8+): ``{"event": "MEDIA_START", "connection_id": "abc", ...}`` for events and
  ``{"command": "MARK_MEDIA", "correlation_id": "x"}`` for commands.

Every event parses to a typed class (unknown names to ``UnknownControlEvent``, kept), each
remembering the format it came in so replies can use the same one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from voxtra.errors import MediaError

__all__ = [
    "ChanWsProtocolError",
    "Command",
    "CommandRejected",
    "ControlEvent",
    "ControlFormat",
    "DtmfEnd",
    "MediaBufferingCompleted",
    "MediaMarkProcessed",
    "MediaStart",
    "MediaXoff",
    "MediaXon",
    "QueueDrained",
    "Status",
    "UnknownControlEvent",
    "build_command",
    "parse_control",
]

_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_MAX_TEXT = 65536
_DTMF = set("0123456789*#ABCDabcd")


class ChanWsProtocolError(MediaError):
    """A TEXT frame that is not a well-formed chan_websocket control message."""


class ControlFormat(StrEnum):
    TEXT = "plain-text"
    JSON = "json"


class Command(StrEnum):
    """Commands the app sends to chan_websocket (case-sensitive on the wire)."""

    ANSWER = "ANSWER"
    HANGUP = "HANGUP"
    START_MEDIA_BUFFERING = "START_MEDIA_BUFFERING"
    STOP_MEDIA_BUFFERING = "STOP_MEDIA_BUFFERING"
    FLUSH_MEDIA = "FLUSH_MEDIA"
    MARK_MEDIA = "MARK_MEDIA"
    PAUSE_MEDIA = "PAUSE_MEDIA"
    CONTINUE_MEDIA = "CONTINUE_MEDIA"
    GET_STATUS = "GET_STATUS"
    REPORT_QUEUE_DRAINED = "REPORT_QUEUE_DRAINED"
    SET_MEDIA_DIRECTION = "SET_MEDIA_DIRECTION"


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """Base of all events. ``fields`` holds every parameter as received."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    wire_format: ControlFormat = ControlFormat.TEXT

    @property
    def channel_id(self) -> str | None:
        v = self.fields.get("channel_id")
        return None if v is None else str(v)


@dataclass(frozen=True, slots=True)
class MediaStart(ControlEvent):
    connection_id: str = ""
    channel: str = ""
    format: str = ""
    optimal_frame_size: int = 0
    ptime: int = 20
    channel_variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaXoff(ControlEvent):
    """Asterisk's queue is nearly full: stop sending audio until ``MediaXon``."""


@dataclass(frozen=True, slots=True)
class MediaXon(ControlEvent):
    """Asterisk's queue drained below the low-water mark: sending is safe again."""


@dataclass(frozen=True, slots=True)
class DtmfEnd(ControlEvent):
    digit: str = ""


@dataclass(frozen=True, slots=True)
class MediaBufferingCompleted(ControlEvent):
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class MediaMarkProcessed(ControlEvent):
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueDrained(ControlEvent):
    pass


@dataclass(frozen=True, slots=True)
class Status(ControlEvent):
    queue_length: int | None = None
    xon_level: int | None = None
    xoff_level: int | None = None
    queue_full: bool | None = None
    bulk_media: bool | None = None
    media_paused: bool | None = None


@dataclass(frozen=True, slots=True)
class CommandRejected(ControlEvent):
    """Asterisk's ``ERROR`` event: it refused a command we sent (JSON it cannot parse,
    a media command in passthrough mode). ``error_text`` is its reason, whole."""

    error_text: str = ""


@dataclass(frozen=True, slots=True)
class UnknownControlEvent(ControlEvent):
    """An event this version does not know; kept so nothing is silently lost.

    Not ``UnknownEvent``: that is :class:`voxtra.ari.events.UnknownEvent`, an ARI event.
    """


def _int(name: str, value: Any, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise ChanWsProtocolError(f"missing {name}")
        return None
    if isinstance(value, bool):
        raise ChanWsProtocolError(f"{name} is not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    raise ChanWsProtocolError(f"{name} is not an integer: {value!r}")


def _bool(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ChanWsProtocolError(f"{name} is not a boolean: {value!r}")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _split_text(text: str) -> tuple[str, dict[str, Any]]:
    fields: dict[str, Any] = {}
    # ERROR's error_text is free text to the end of the line, printed last by Asterisk
    # ("ERROR channel_id:ID error_text:FLUSH_MEDIA not supported in passthrough
    # mode"): cut into tokens, it kept its first word and its second became a
    # correlation id.
    head, sep, error_text = text.partition(" error_text:")
    if sep and head.split()[0] == "ERROR":
        text = head
        fields["error_text"] = error_text.strip()
    tokens = text.split()
    name, rest = tokens[0], tokens[1:]
    bare: list[str] = []
    for tok in rest:
        key, sep, value = tok.partition(":")
        if sep and key:
            fields[key] = value
        else:
            bare.append(tok)
    if bare:
        fields.setdefault("correlation_id", bare[0])
        fields["args"] = bare
    return name, fields


def _split_json(text: str) -> tuple[str, dict[str, Any]]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ChanWsProtocolError(f"invalid JSON control message: {exc}") from None
    if not isinstance(obj, dict):
        raise ChanWsProtocolError("JSON control message is not an object")
    name = obj.get("event")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ChanWsProtocolError(f"JSON control message without a valid event: {name!r}")
    fields = {k: v for k, v in obj.items() if k != "event"}
    return name, fields


def parse_control(text: str | bytes) -> ControlEvent:
    """Parse one TEXT frame from Asterisk; raise ``ChanWsProtocolError`` if malformed."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ChanWsProtocolError("control message is not UTF-8") from None
    if len(text) > _MAX_TEXT:
        raise ChanWsProtocolError("control message too long")
    stripped = text.strip()
    if not stripped:
        raise ChanWsProtocolError("empty control message")
    if stripped.startswith("{"):
        fmt = ControlFormat.JSON
        name, fields = _split_json(stripped)
    else:
        fmt = ControlFormat.TEXT
        name, fields = _split_text(stripped)
        if not _NAME.fullmatch(name):
            raise ChanWsProtocolError(f"not a control message: {stripped[:60]!r}")
    return _typed(name, fields, fmt)


def _typed(name: str, f: dict[str, Any], fmt: ControlFormat) -> ControlEvent:
    if name == "MEDIA_START":
        size = _int("optimal_frame_size", f.get("optimal_frame_size"), required=True)
        ptime = _int("ptime", f.get("ptime"), required=False)
        raw_vars = f.get("channel_variables") or {}
        if not isinstance(raw_vars, dict):
            raise ChanWsProtocolError("channel_variables is not an object")
        assert size is not None
        if size <= 0:
            raise ChanWsProtocolError(f"optimal_frame_size must be positive, got {size}")
        return MediaStart(
            name,
            f,
            fmt,
            connection_id=str(f.get("connection_id", "")),
            channel=str(f.get("channel", "")),
            format=str(f.get("format", "")),
            optimal_frame_size=size,
            ptime=20 if ptime is None else ptime,
            channel_variables={str(k): str(v) for k, v in raw_vars.items()},
        )
    if name == "DTMF_END":
        digit = f.get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in _DTMF:
            raise ChanWsProtocolError(f"DTMF_END with invalid digit {digit!r}")
        return DtmfEnd(name, f, fmt, digit=digit)
    if name == "MEDIA_XOFF":
        return MediaXoff(name, f, fmt)
    if name == "MEDIA_XON":
        return MediaXon(name, f, fmt)
    if name == "MEDIA_BUFFERING_COMPLETED":
        return MediaBufferingCompleted(name, f, fmt, _opt_str(f.get("correlation_id")))
    if name == "MEDIA_MARK_PROCESSED":
        return MediaMarkProcessed(name, f, fmt, _opt_str(f.get("correlation_id")))
    if name == "QUEUE_DRAINED":
        return QueueDrained(name, f, fmt)
    if name == "ERROR":
        return CommandRejected(name, f, fmt, error_text=str(f.get("error_text", "")))
    if name == "STATUS":
        return Status(
            name,
            f,
            fmt,
            queue_length=_int("queue_length", f.get("queue_length"), required=False),
            xon_level=_int("xon_level", f.get("xon_level"), required=False),
            xoff_level=_int("xoff_level", f.get("xoff_level"), required=False),
            queue_full=_bool("queue_full", f.get("queue_full")),
            bulk_media=_bool("bulk_media", f.get("bulk_media")),
            media_paused=_bool("media_paused", f.get("media_paused")),
        )
    return UnknownControlEvent(name, f, fmt)


_DIRECTIONS = ("in", "out", "both")
_TOKEN = re.compile(r"[^\s:]+")


def build_command(
    command: Command,
    fmt: ControlFormat = ControlFormat.TEXT,
    *,
    correlation_id: str | None = None,
    direction: str | None = None,
) -> str:
    """The TEXT frame for ``command``.

    ``correlation_id`` goes with STOP_MEDIA_BUFFERING and MARK_MEDIA; ``direction``
    ("in", "out" or "both") is required by SET_MEDIA_DIRECTION.
    """
    command = Command(command)
    params: dict[str, str] = {}
    if correlation_id is not None:
        if command not in (Command.STOP_MEDIA_BUFFERING, Command.MARK_MEDIA):
            raise ChanWsProtocolError(f"{command} takes no correlation_id")
        if fmt is ControlFormat.TEXT and not _TOKEN.fullmatch(correlation_id):
            raise ChanWsProtocolError("plain-text correlation ids cannot hold spaces or ':'")
        params["correlation_id"] = correlation_id
    if command is Command.SET_MEDIA_DIRECTION:
        if direction not in _DIRECTIONS:
            raise ChanWsProtocolError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
        params["direction"] = direction
    elif direction is not None:
        raise ChanWsProtocolError(f"{command} takes no direction")
    if fmt is ControlFormat.JSON:
        return json.dumps({"command": command.value, **params}, separators=(",", ":"))
    return " ".join([command.value, *params.values()])
