"""Typed ARI events: one class per event kind, and ``parse_event`` for WebSocket messages.

Parsing is sans-IO: ``parse_event`` takes the text (or bytes, or an already decoded
dict) of one WebSocket message and returns an ``AriEvent`` subclass. Kinds this module
does not know become ``UnknownEvent`` so a newer Asterisk never breaks the stream;
input that is not an ARI message at all, or a known kind with an unusable shape, raises
``EventParseError`` so the stream can log and skip it. Every event keeps the dict it was
parsed from in ``raw``.

Text is validated straight from JSON by pydantic-core (one pass, no intermediate dict),
and ``raw`` is decoded from the kept text only when someone asks for it: measured on the
captured fixtures, 5 us an event instead of 8.5 (``json.loads`` was 3 us of it and no
code on the event path reads ``raw``). Input that path refuses (an unknown kind, a bad
shape, text pydantic-core's JSON reader and ``json.loads`` might read differently) is
parsed again the full way, :func:`parse_object` on ``json.loads``'s dict, so every
result and every error is the one the full parser gives (``tests/unit/ari/
test_events_fast.py`` compares both on every fixture).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import Field, PrivateAttr, TypeAdapter, ValidationError

from voxtra.errors import VoxtraError

from .models import (
    AriDatetime,
    AriModel,
    Bridge,
    Channel,
    ContactInfo,
    DeviceState,
    Endpoint,
    LiveRecording,
    Peer,
    PlaybackResource,
    TextMessage,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_ROUTED",
    "EVENT_TYPES",
    "AdditionalParam",
    "AnyEvent",
    "ApplicationMoveFailed",
    "ApplicationRegistered",
    "ApplicationReplaced",
    "ApplicationUnregistered",
    "AriEvent",
    "BridgeAttendedTransfer",
    "BridgeBlindTransfer",
    "BridgeCreated",
    "BridgeDestroyed",
    "BridgeMerged",
    "BridgeVideoSourceChanged",
    "CallBroadcast",
    "CallClaimed",
    "ChannelCallerId",
    "ChannelConnectedLine",
    "ChannelCreated",
    "ChannelDestroyed",
    "ChannelDialplan",
    "ChannelDtmfReceived",
    "ChannelEnteredBridge",
    "ChannelHangupRequest",
    "ChannelHold",
    "ChannelLeftBridge",
    "ChannelStateChange",
    "ChannelTalkingFinished",
    "ChannelTalkingStarted",
    "ChannelToneDetected",
    "ChannelTransfer",
    "ChannelUnhold",
    "ChannelUserevent",
    "ChannelVarset",
    "ContactStatusChange",
    "DeviceStateChanged",
    "Dial",
    "EndpointStateChange",
    "EventParseError",
    "MissingParams",
    "PeerStatusChange",
    "PlaybackContinuing",
    "PlaybackFinished",
    "PlaybackStarted",
    "RecordingFailed",
    "RecordingFinished",
    "RecordingStarted",
    "ReferTo",
    "ReferredBy",
    "RequiredDestination",
    "StasisEnd",
    "StasisStart",
    "TextMessageReceived",
    "UnknownEvent",
    "parse_event",
    "parse_object",
    "peek_route",
]


class EventParseError(VoxtraError):
    """A WebSocket message could not be read as an ARI event.

    ``event_type`` is the message's ``type`` when it had one; ``raw`` is the input
    (truncated to keep logs readable).
    """

    def __init__(self, message: str, *, event_type: str | None = None, raw: object = None) -> None:
        super().__init__(message)
        self.event_type = event_type
        text = raw if isinstance(raw, str) else repr(raw)
        self.raw = text[:500]


class AriEvent(AriModel):
    """Fields every ARI event has, plus the raw dict and the ids routing needs."""

    type: str
    application: str = ""
    timestamp: AriDatetime = None
    asterisk_id: str | None = None

    # The dict this event was parsed from, or the JSON text it was validated from
    # (decoded into the dict on first use of ``raw``).
    _raw: dict[str, Any] | str | bytes | None = PrivateAttr(default=None)

    @property
    def raw(self) -> dict[str, Any]:
        """The dict this event was parsed from (a dump of the model if built by hand)."""
        raw = self._raw
        if raw is None:
            return self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not isinstance(raw, dict):
            # Read by json.loads already once, on the fast path's terms (see parse_event).
            raw = self._raw = json.loads(raw)
        return raw

    def __eq__(self, other: object) -> bool:
        # pydantic compares the private attributes too: compare the decoded ``raw``
        # (None for an event built by hand), so an event whose text is not decoded yet
        # equals the same event parsed from a dict, as before the lazy ``raw``.
        if not isinstance(other, AriEvent):
            return super().__eq__(other)
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and (self.__pydantic_extra__ or {}) == (other.__pydantic_extra__ or {})
            and (None if self._raw is None else self.raw)
            == (None if other._raw is None else other.raw)
        )

    __hash__ = None  # type: ignore[assignment]  # as pydantic's: mutable, unhashable

    # The ids below are read from the instance's own fields (``__dict__``) rather than
    # with getattr(): on a kind without the field, pydantic's __getattr__ raised and
    # caught an AttributeError each time, 1.2 us per look-up, and routing one event
    # looked up four of them (profile of bench/call_setup.py). A field of that name
    # among the extras (an unknown key) was never a Channel or Bridge either.

    @property
    def channel_id(self) -> str | None:
        """Id of the channel this event is about, or None if it is about no channel."""
        channel = self.__dict__.get("channel")
        return channel.id if isinstance(channel, Channel) else None

    @property
    def bridge_id(self) -> str | None:
        """Id of the bridge this event is about, or None if it is about no bridge."""
        bridge = self.__dict__.get("bridge")
        return bridge.id if isinstance(bridge, Bridge) else None

    @property
    def target_uris(self) -> tuple[str, ...]:
        """``channel:ID`` / ``bridge:ID`` targets of the event's playback and recording
        (empty for every other kind)."""
        fields = self.__dict__
        found: tuple[str, ...] = ()
        for name in ("playback", "recording"):
            target = getattr(fields.get(name), "target_uri", None)
            if isinstance(target, str):
                found += (target,)
        return found


# --- Stasis application -----------------------------------------------------------


class StasisStart(AriEvent):
    """A channel entered the application; ``args`` are the Stasis() / appArgs arguments."""

    type: Literal["StasisStart"] = "StasisStart"
    args: list[str] = Field(default_factory=list)
    channel: Channel
    replace_channel: Channel | None = None


class StasisEnd(AriEvent):
    """A channel left the application (hung up, or continued into the dialplan)."""

    type: Literal["StasisEnd"] = "StasisEnd"
    channel: Channel


class ApplicationReplaced(AriEvent):
    """Another WebSocket took over this application; this one gets no more events."""

    type: Literal["ApplicationReplaced"] = "ApplicationReplaced"


class ApplicationRegistered(AriEvent):
    """The application was registered (Asterisk 22 outbound/multi-app WebSockets)."""

    type: Literal["ApplicationRegistered"] = "ApplicationRegistered"


class ApplicationUnregistered(AriEvent):
    """The application was unregistered."""

    type: Literal["ApplicationUnregistered"] = "ApplicationUnregistered"


class ApplicationMoveFailed(AriEvent):
    """Moving a channel to another application failed; it stays in this one."""

    type: Literal["ApplicationMoveFailed"] = "ApplicationMoveFailed"
    channel: Channel
    destination: str = ""
    args: list[str] = Field(default_factory=list)


class MissingParams(AriEvent):
    """Error message: the WebSocket request lacked required parameters."""

    type: Literal["MissingParams"] = "MissingParams"
    params: list[str] = Field(default_factory=list)


# --- channels ---------------------------------------------------------------------


class ChannelCreated(AriEvent):
    """A channel was created."""

    type: Literal["ChannelCreated"] = "ChannelCreated"
    channel: Channel


class ChannelDestroyed(AriEvent):
    """A channel is gone; ``cause`` is the Q.850 hangup cause."""

    type: Literal["ChannelDestroyed"] = "ChannelDestroyed"
    cause: int = 0
    cause_txt: str = ""
    tech_cause: int | None = None
    channel: Channel


class ChannelStateChange(AriEvent):
    """A channel's state changed (``channel.state``: Ring, Up ...)."""

    type: Literal["ChannelStateChange"] = "ChannelStateChange"
    channel: Channel


class ChannelDtmfReceived(AriEvent):
    """A DTMF digit ended on a channel (there is no event for its start)."""

    type: Literal["ChannelDtmfReceived"] = "ChannelDtmfReceived"
    digit: str
    duration_ms: int = 0
    channel: Channel


class ChannelHangupRequest(AriEvent):
    """A hangup was requested on a channel; it is not gone until ChannelDestroyed."""

    type: Literal["ChannelHangupRequest"] = "ChannelHangupRequest"
    cause: int | None = None
    tech_cause: int | None = None
    soft: bool | None = None
    channel: Channel


class ChannelVarset(AriEvent):
    """A variable changed; without ``channel`` it is a global variable."""

    type: Literal["ChannelVarset"] = "ChannelVarset"
    variable: str
    value: str = ""
    channel: Channel | None = None


class ChannelEnteredBridge(AriEvent):
    """A channel entered a bridge."""

    type: Literal["ChannelEnteredBridge"] = "ChannelEnteredBridge"
    bridge: Bridge
    channel: Channel | None = None


class ChannelLeftBridge(AriEvent):
    """A channel left a bridge."""

    type: Literal["ChannelLeftBridge"] = "ChannelLeftBridge"
    bridge: Bridge
    channel: Channel


class ChannelDialplan(AriEvent):
    """A channel moved in the dialplan and is about to run ``dialplan_app``."""

    type: Literal["ChannelDialplan"] = "ChannelDialplan"
    channel: Channel
    dialplan_app: str = ""
    dialplan_app_data: str = ""


class ChannelCallerId(AriEvent):
    """A channel's caller id changed."""

    type: Literal["ChannelCallerId"] = "ChannelCallerId"
    caller_presentation: int = 0
    caller_presentation_txt: str = ""
    channel: Channel


class ChannelConnectedLine(AriEvent):
    """A channel's connected line changed."""

    type: Literal["ChannelConnectedLine"] = "ChannelConnectedLine"
    channel: Channel


class ChannelHold(AriEvent):
    """A channel put its peer on hold."""

    type: Literal["ChannelHold"] = "ChannelHold"
    channel: Channel
    musicclass: str | None = None


class ChannelUnhold(AriEvent):
    """A channel took its peer off hold."""

    type: Literal["ChannelUnhold"] = "ChannelUnhold"
    channel: Channel


class ChannelTalkingStarted(AriEvent):
    """TALK_DETECT heard talking start on a channel."""

    type: Literal["ChannelTalkingStarted"] = "ChannelTalkingStarted"
    channel: Channel


class ChannelTalkingFinished(AriEvent):
    """TALK_DETECT heard talking stop; ``duration`` is in milliseconds."""

    type: Literal["ChannelTalkingFinished"] = "ChannelTalkingFinished"
    channel: Channel
    duration: int = 0


class ChannelToneDetected(AriEvent):
    """TONE_DETECT heard its tone on a channel."""

    type: Literal["ChannelToneDetected"] = "ChannelToneDetected"
    channel: Channel


class ChannelUserevent(AriEvent):
    """A user event (UserEvent() or ``POST /events/user``); ``userevent`` holds its data."""

    type: Literal["ChannelUserevent"] = "ChannelUserevent"
    eventname: str
    channel: Channel | None = None
    bridge: Bridge | None = None
    endpoint: Endpoint | None = None
    userevent: dict[str, Any] = Field(default_factory=dict)


class AdditionalParam(AriModel):
    """A protocol parameter of a transfer destination."""

    parameter_name: str = ""
    parameter_value: str = ""


class RequiredDestination(AriModel):
    """Where a REFER asked the call to go."""

    protocol_id: str | None = None
    destination: str | None = None
    additional_protocol_params: list[AdditionalParam] | None = None


class ReferTo(AriModel):
    """Target of a REFER transfer."""

    requested_destination: RequiredDestination = Field(default_factory=RequiredDestination)
    destination_channel: Channel | None = None
    connected_channel: Channel | None = None
    bridge: Bridge | None = None


class ReferredBy(AriModel):
    """Origin of a REFER transfer."""

    source_channel: Channel
    connected_channel: Channel | None = None
    bridge: Bridge | None = None


class ChannelTransfer(AriEvent):
    """A SIP REFER transfer request (only on channels with ``transfer=ari_only``).

    ``channel_id`` is the transferring channel (``referred_by.source_channel``).
    """

    type: Literal["ChannelTransfer"] = "ChannelTransfer"
    state: str | None = None
    refer_to: ReferTo
    referred_by: ReferredBy

    @property
    def channel_id(self) -> str | None:
        return self.referred_by.source_channel.id


class Dial(AriEvent):
    """Dialing state changed; ``dialstatus`` is empty while ringing, then ANSWER, BUSY ...

    ``channel_id`` is the dialed channel (``peer``): ``caller`` is absent when the
    dial came from an originate.
    """

    type: Literal["Dial"] = "Dial"
    caller: Channel | None = None
    peer: Channel
    forward: str | None = None
    forwarded: Channel | None = None
    dialstring: str | None = None
    dialstatus: str = ""

    @property
    def channel_id(self) -> str | None:
        return self.peer.id


class CallBroadcast(AriEvent):
    """A call is being offered to several applications (Asterisk 22 call broadcast)."""

    type: Literal["CallBroadcast"] = "CallBroadcast"
    channel: Channel
    caller: str | None = None
    called: str | None = None


class CallClaimed(AriEvent):
    """A broadcast call was claimed by ``winner_app``."""

    type: Literal["CallClaimed"] = "CallClaimed"
    channel: Channel
    winner_app: str = ""


# --- bridges ----------------------------------------------------------------------


class BridgeCreated(AriEvent):
    """A bridge was created."""

    type: Literal["BridgeCreated"] = "BridgeCreated"
    bridge: Bridge


class BridgeDestroyed(AriEvent):
    """A bridge was destroyed."""

    type: Literal["BridgeDestroyed"] = "BridgeDestroyed"
    bridge: Bridge


class BridgeMerged(AriEvent):
    """``bridge_from`` was merged into ``bridge``."""

    type: Literal["BridgeMerged"] = "BridgeMerged"
    bridge: Bridge
    bridge_from: Bridge


class BridgeVideoSourceChanged(AriEvent):
    """The video source of a bridge changed."""

    type: Literal["BridgeVideoSourceChanged"] = "BridgeVideoSourceChanged"
    bridge: Bridge
    old_video_source_id: str | None = None


class BridgeBlindTransfer(AriEvent):
    """A blind transfer happened (``channel`` is the transferer)."""

    type: Literal["BridgeBlindTransfer"] = "BridgeBlindTransfer"
    channel: Channel
    replace_channel: Channel | None = None
    transferee: Channel | None = None
    exten: str = ""
    context: str = ""
    result: str = ""
    is_external: bool = False
    bridge: Bridge | None = None


class BridgeAttendedTransfer(AriEvent):
    """An attended transfer happened.

    ``channel_id`` is the transferer's first leg and ``bridge_id`` its bridge.
    """

    type: Literal["BridgeAttendedTransfer"] = "BridgeAttendedTransfer"
    transferer_first_leg: Channel
    transferer_second_leg: Channel
    replace_channel: Channel | None = None
    transferee: Channel | None = None
    transfer_target: Channel | None = None
    result: str = ""
    is_external: bool = False
    transferer_first_leg_bridge: Bridge | None = None
    transferer_second_leg_bridge: Bridge | None = None
    destination_type: str = ""
    destination_bridge: str | None = None
    destination_application: str | None = None
    destination_link_first_leg: Channel | None = None
    destination_link_second_leg: Channel | None = None
    destination_threeway_channel: Channel | None = None
    destination_threeway_bridge: Bridge | None = None

    @property
    def channel_id(self) -> str | None:
        return self.transferer_first_leg.id

    @property
    def bridge_id(self) -> str | None:
        bridge = self.transferer_first_leg_bridge
        return bridge.id if bridge is not None else None


# --- media ------------------------------------------------------------------------


class _PlaybackEvent(AriEvent):
    playback: PlaybackResource


class PlaybackStarted(_PlaybackEvent):
    """A playback started."""

    type: Literal["PlaybackStarted"] = "PlaybackStarted"


class PlaybackContinuing(_PlaybackEvent):
    """A playback of several media moved on to the next one."""

    type: Literal["PlaybackContinuing"] = "PlaybackContinuing"


class PlaybackFinished(_PlaybackEvent):
    """A playback ended (``playback.state`` says done, failed or canceled)."""

    type: Literal["PlaybackFinished"] = "PlaybackFinished"


class _RecordingEvent(AriEvent):
    recording: LiveRecording


class RecordingStarted(_RecordingEvent):
    """A recording started."""

    type: Literal["RecordingStarted"] = "RecordingStarted"


class RecordingFinished(_RecordingEvent):
    """A recording ended and its file is stored."""

    type: Literal["RecordingFinished"] = "RecordingFinished"


class RecordingFailed(_RecordingEvent):
    """A recording failed; ``recording.cause`` says why."""

    type: Literal["RecordingFailed"] = "RecordingFailed"


# --- endpoints, devices, messages -------------------------------------------------


class EndpointStateChange(AriEvent):
    """An endpoint's state changed."""

    type: Literal["EndpointStateChange"] = "EndpointStateChange"
    endpoint: Endpoint


class ContactStatusChange(AriEvent):
    """A SIP contact's status changed."""

    type: Literal["ContactStatusChange"] = "ContactStatusChange"
    endpoint: Endpoint
    contact_info: ContactInfo


class PeerStatusChange(AriEvent):
    """A peer's status changed."""

    type: Literal["PeerStatusChange"] = "PeerStatusChange"
    endpoint: Endpoint
    peer: Peer


class DeviceStateChanged(AriEvent):
    """A device state changed."""

    type: Literal["DeviceStateChanged"] = "DeviceStateChanged"
    device_state: DeviceState


class TextMessageReceived(AriEvent):
    """An out-of-call text message arrived."""

    type: Literal["TextMessageReceived"] = "TextMessageReceived"
    message: TextMessage
    endpoint: Endpoint | None = None


class UnknownEvent(AriEvent):
    """An event kind this version of Voxtra does not know; all its fields are kept.

    ``channel_id`` and ``bridge_id`` still work when the event has a ``channel`` or
    ``bridge`` object with an ``id``, so new kinds still reach the right call.
    """

    def _nested_id(self, key: str) -> str | None:
        value = (self.model_extra or {}).get(key)
        if isinstance(value, dict):
            ident = value.get("id")
            if isinstance(ident, str):
                return ident
        return None

    @property
    def channel_id(self) -> str | None:
        return self._nested_id("channel")

    @property
    def bridge_id(self) -> str | None:
        return self._nested_id("bridge")


AnyEvent: TypeAlias = Annotated[
    StasisStart
    | StasisEnd
    | ApplicationReplaced
    | ApplicationRegistered
    | ApplicationUnregistered
    | ApplicationMoveFailed
    | MissingParams
    | ChannelCreated
    | ChannelDestroyed
    | ChannelStateChange
    | ChannelDtmfReceived
    | ChannelHangupRequest
    | ChannelVarset
    | ChannelEnteredBridge
    | ChannelLeftBridge
    | ChannelDialplan
    | ChannelCallerId
    | ChannelConnectedLine
    | ChannelHold
    | ChannelUnhold
    | ChannelTalkingStarted
    | ChannelTalkingFinished
    | ChannelToneDetected
    | ChannelUserevent
    | ChannelTransfer
    | Dial
    | CallBroadcast
    | CallClaimed
    | BridgeCreated
    | BridgeDestroyed
    | BridgeMerged
    | BridgeVideoSourceChanged
    | BridgeBlindTransfer
    | BridgeAttendedTransfer
    | PlaybackStarted
    | PlaybackContinuing
    | PlaybackFinished
    | RecordingStarted
    | RecordingFinished
    | RecordingFailed
    | EndpointStateChange
    | ContactStatusChange
    | PeerStatusChange
    | DeviceStateChanged
    | TextMessageReceived,
    Field(discriminator="type"),
]
"""Every known event kind, discriminated on ``type``."""

# Built once: the union's validator is compiled on construction.
_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def _event_classes() -> dict[str, type[AriEvent]]:
    classes: dict[str, type[AriEvent]] = {}
    union = get_args(AnyEvent)[0]
    for cls in get_args(union):
        default = cls.model_fields["type"].default
        classes[default] = cls
    return classes


EVENT_TYPES: dict[str, type[AriEvent]] = _event_classes()
"""Known ``type`` values and the class each becomes."""


def parse_event(data: bytes | bytearray | str | dict[str, Any]) -> AriEvent:
    """Parse one ARI WebSocket message into its event class.

    Unknown kinds become ``UnknownEvent``. Raises ``EventParseError`` for anything that
    is not a JSON object with a string ``type``, or a known kind whose fields have the
    wrong shape.
    """
    if isinstance(data, dict):
        return parse_object(data, data)
    if _fast_candidate(data):
        try:
            event: AriEvent = _ADAPTER.validate_json(data)
        except (ValidationError, RecursionError):
            pass  # parsed again below, for the full parser's result or error
        else:
            event._raw = data if isinstance(data, str | bytes) else bytes(data)
            return event
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise EventParseError(f"not valid JSON: {exc}", raw=data) from exc
    return parse_object(obj, data)


def _fast_candidate(data: bytes | bytearray | str) -> bool:
    """Whether pydantic-core may read ``data`` in place of ``json.loads``.

    Both follow RFC 8259 for what Asterisk sends; where they may part (text that
    ``json.loads`` accepts and pydantic-core's reader does not, such as ``NaN``, lone
    surrogates or a deep nesting, fails over to the full path anyway), the one
    direction that would matter, pydantic-core reading what ``json.loads`` refuses, is
    excluded here: a byte-order mark or a non-UTF-8 encoding, which only ``json.loads``
    (bytes) detects and decodes.
    """
    if isinstance(data, str):
        return not data.startswith("\ufeff")
    head = bytes(data[:4])
    # json.loads guesses UTF-16/32 from NUL bytes among the first four, and skips a
    # UTF-8 byte-order mark: leave all of those to it.
    return b"\x00" not in head and not head.startswith(b"\xef\xbb\xbf")


def parse_object(obj: Any, data: object = None) -> AriEvent:
    """The full parser: one decoded WebSocket message (``json.loads``'s result) into its
    event class; ``data`` is what to quote in an error (default: ``obj``).

    Unknown kinds become ``UnknownEvent``; anything else that is not an event raises
    ``EventParseError``, as :func:`parse_event` does.
    """
    if data is None:
        data = obj
    if not isinstance(obj, dict):
        raise EventParseError(f"expected a JSON object, got {type(obj).__name__}", raw=data)
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise EventParseError("message has no string 'type'", raw=data)
    try:
        if kind in EVENT_TYPES:
            event: AriEvent = _ADAPTER.validate_python(obj)
        else:
            event = UnknownEvent.model_validate(obj)
    except (ValidationError, RecursionError) as exc:
        raise EventParseError(f"bad {kind} event: {exc}", event_type=kind, raw=data) from exc
    event._raw = obj
    return event


CHANNEL_ROUTED: dict[str, str] = {
    kind: "channel"
    for kind in (
        "ChannelCreated",
        "ChannelDestroyed",
        "ChannelStateChange",
        "ChannelDtmfReceived",
        "ChannelHangupRequest",
        "ChannelVarset",
        "ChannelDialplan",
        "ChannelCallerId",
        "ChannelConnectedLine",
        "ChannelHold",
        "ChannelUnhold",
        "ChannelTalkingStarted",
        "ChannelTalkingFinished",
        "ChannelToneDetected",
        "StasisEnd",
    )
} | {"Dial": "peer"}
"""Kinds whose routing depends on one channel alone (``channel_id``, no bridge, no
playback or recording target), and the key of that channel's object."""

_TYPE_KEY = '"type":"'
_MARKERS = {key: (f'"{key}":', f'"{key}":{{"id":"') for key in set(CHANNEL_ROUTED.values())}


def peek_route(data: bytes | bytearray | str | dict[str, Any]) -> tuple[str, str] | None:
    """The kind and ``channel_id`` of a message, read from its text without parsing it,
    when that is sure; None otherwise (the message must then be parsed to be routed).

    Sure means: text, one ``"type":"`` key naming a kind of :data:`CHANNEL_ROUTED`, and
    one key of that kind's channel, holding an object whose first key is ``"id"`` with
    a plain string (no escapes). Asterisk sends compact JSON (ari.conf ``pretty = no``)
    with the id first in each channel object; other layouts are parsed as before. The
    patterns cannot occur inside a JSON string (its quotes are escaped there), so a
    match is a key. Why: an app routes an event by its channel alone, and a third of
    an originated call's events are about a channel no call of the app owns (the
    ``;2`` half of a Local channel): parsing one is 5 us (docs/performance.md).
    """
    if not isinstance(data, str):
        return None
    at = data.find(_TYPE_KEY)
    if at < 0:
        return None
    start = at + len(_TYPE_KEY)
    end = data.find('"', start)
    key = CHANNEL_ROUTED.get(data[start:end]) if end >= 0 else None
    if key is None or data.find(_TYPE_KEY, end) >= 0:
        return None
    any_key, with_id = _MARKERS[key]
    at = data.find(with_id)
    if at < 0 or data.count(any_key) != 1:
        return None
    id_start = at + len(with_id)
    id_end = data.find('"', id_start)
    ident = data[id_start:id_end] if id_end >= 0 else ""
    if not ident or "\\" in ident:
        return None
    return data[start:end], ident
