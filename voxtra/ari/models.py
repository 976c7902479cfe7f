"""Typed views of the JSON objects the Asterisk REST Interface returns and sends.

Field names follow the ARI data models of Asterisk 22 (``/ari/api-docs/*.json``), which
are already snake_case. Every model keeps fields it does not know (``extra="allow"``):
a newer Asterisk adding a field must not break parsing, and the value stays reachable
through ``model_extra``. Fields ARI documents as required but that Voxtra can live
without get defaults, so only a truly unusable object (no id, a list where an object
belongs) is rejected.

Classes carry ARI's model names, except where Voxtra's own API already uses the name for
something else: ARI's ``Playback`` is :class:`PlaybackResource` here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "Application",
    "AriDatetime",
    "AriErrorBody",
    "AriModel",
    "AsteriskInfo",
    "AsteriskPing",
    "Bridge",
    "BuildInfo",
    "CallerID",
    "Channel",
    "ConfigInfo",
    "ContactInfo",
    "DeviceState",
    "DialplanCEP",
    "Endpoint",
    "FormatLangPair",
    "LiveRecording",
    "Mailbox",
    "Peer",
    "PlaybackResource",
    "SetId",
    "Sound",
    "StatusInfo",
    "StoredRecording",
    "SystemInfo",
    "TextMessage",
    "Variable",
]


def _unreadable(value: Any) -> None:
    """What the datetime branch of ``AriDatetime`` refused becomes None."""
    return None


AriDatetime = Annotated[
    datetime | Annotated[None, BeforeValidator(_unreadable)], Field(union_mode="left_to_right")
]
"""A datetime from ARI, or None when absent or unreadable.

pydantic-core reads ARI's timestamps itself (``2026-11-22T00:05:15.074+0000``); only a
value it refuses reaches Python (``_unreadable``). A Python validator on every
timestamp, as before, cost 0.77 us more a field (3.69 -> 2.92 us for a one-field model
from JSON, 20,000 runs), and every channel event has two: about 25 us of the 0.5 ms
a call setup costs against Asterisk (16 events an originated call). One difference
from ``datetime.fromisoformat``: a number is read as seconds since the epoch (ARI
sends none)."""


class AriModel(BaseModel):
    """Base of every ARI model: tolerant of unknown fields, which are kept."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        # ARI sends numbers as strings in places (and the reverse in old versions).
        coerce_numbers_to_str=True,
    )


class CallerID(AriModel):
    """A name and number pair (caller or connected line)."""

    name: str = ""
    number: str = ""


class DialplanCEP(AriModel):
    """Where a channel is in the dialplan: context, extension, priority, application."""

    context: str = ""
    exten: str = ""
    priority: int = 0
    app_name: str = ""
    app_data: str = ""


class Channel(AriModel):
    """A channel as ARI describes it (REST responses and inside events)."""

    id: str
    name: str = ""
    state: str = ""
    protocol_id: str = ""
    caller: CallerID = Field(default_factory=CallerID)
    connected: CallerID = Field(default_factory=CallerID)
    accountcode: str = ""
    dialplan: DialplanCEP = Field(default_factory=DialplanCEP)
    creationtime: AriDatetime = None
    language: str = ""
    channelvars: dict[str, str] | None = None
    caller_rdnis: str | None = None
    tenantid: str | None = None


class Bridge(AriModel):
    """A bridge; ``channels`` holds the ids of the channels in it."""

    id: str
    technology: str = ""
    bridge_type: str = ""
    bridge_class: str = ""
    creator: str = ""
    name: str = ""
    channels: list[str] = Field(default_factory=list)
    video_mode: str | None = None
    video_source_id: str | None = None
    creationtime: AriDatetime = None
    bridgevars: dict[str, str] | None = None


class PlaybackResource(AriModel):
    """ARI's ``Playback``: a media playback; ``state`` is queued, playing, continuing, done ...

    Named apart from :class:`voxtra.Playback`, the handle ``call.play_file`` returns to
    a handler, so one name keeps one meaning.
    """

    id: str
    media_uri: str = ""
    next_media_uri: str | None = None
    target_uri: str = ""
    language: str | None = None
    state: str = ""


class LiveRecording(AriModel):
    """A recording in progress (or just finished); durations are in seconds."""

    name: str
    format: str = ""
    target_uri: str = ""
    state: str = ""
    duration: int | None = None
    talking_duration: int | None = None
    silence_duration: int | None = None
    cause: str | None = None


class StoredRecording(AriModel):
    """A finished recording stored by Asterisk."""

    name: str
    format: str = ""


class Endpoint(AriModel):
    """An endpoint (e.g. PJSIP/alice) and the channels currently on it."""

    technology: str
    resource: str
    state: str | None = None
    channel_ids: list[str] = Field(default_factory=list)


class Variable(AriModel):
    """The value of a channel or global variable."""

    value: str = ""


class BuildInfo(AriModel):
    """How Asterisk was built."""

    os: str = ""
    kernel: str = ""
    options: str = ""
    machine: str = ""
    date: str = ""
    user: str = ""


class SystemInfo(AriModel):
    """Asterisk version and entity id."""

    version: str = ""
    entity_id: str = ""


class SetId(AriModel):
    """User and group Asterisk runs as."""

    user: str = ""
    group: str = ""


class ConfigInfo(AriModel):
    """Asterisk's main configuration as ARI reports it."""

    name: str = ""
    default_language: str = ""
    max_channels: int | None = None
    max_open_files: int | None = None
    max_load: float | None = None
    setid: SetId | None = None


class StatusInfo(AriModel):
    """When Asterisk started and last reloaded."""

    startup_time: AriDatetime = None
    last_reload_time: AriDatetime = None


class AsteriskInfo(AriModel):
    """``GET /asterisk/info``: each part is present only if it was asked for."""

    build: BuildInfo | None = None
    system: SystemInfo | None = None
    config: ConfigInfo | None = None
    status: StatusInfo | None = None


class AsteriskPing(AriModel):
    """``GET /asterisk/ping``: a cheap liveness check."""

    asterisk_id: str = ""
    ping: str = ""
    timestamp: AriDatetime = None


class Application(AriModel):
    """A Stasis application and what it is subscribed to."""

    name: str
    channel_ids: list[str] = Field(default_factory=list)
    bridge_ids: list[str] = Field(default_factory=list)
    endpoint_ids: list[str] = Field(default_factory=list)
    device_names: list[str] = Field(default_factory=list)
    events_allowed: list[dict[str, Any]] | None = None
    events_disallowed: list[dict[str, Any]] | None = None


class FormatLangPair(AriModel):
    """One language and format a sound exists in."""

    language: str = ""
    format: str = ""


class Sound(AriModel):
    """A sound file Asterisk can play, with the formats and languages it exists in."""

    id: str
    text: str | None = None
    formats: list[FormatLangPair] = Field(default_factory=list)


class DeviceState(AriModel):
    """A device state (e.g. ``Stasis:agent1`` is BUSY)."""

    name: str
    state: str = ""


class Mailbox(AriModel):
    """A mailbox and its message counts."""

    name: str
    old_messages: int = 0
    new_messages: int = 0


class TextMessage(AriModel):
    """An out-of-call text message (SIP MESSAGE); ``from`` is a Python keyword."""

    from_: str = Field(default="", alias="from")
    to: str = ""
    body: str = ""
    variables: dict[str, str] | None = None


class ContactInfo(AriModel):
    """A SIP contact's reachability, in ContactStatusChange."""

    uri: str = ""
    contact_status: str = ""
    aor: str = ""
    roundtrip_usec: str | None = None


class Peer(AriModel):
    """A peer's status, in PeerStatusChange."""

    peer_status: str = ""
    cause: str | None = None
    address: str | None = None
    port: str | None = None
    time: str | None = None


class AriErrorBody(AriModel):
    """An ARI error response body.

    Most errors carry ``message``; some (seen: a 500 on ``GET /recordings/stored``)
    carry ``error`` instead. ``text`` gives whichever is there.
    """

    message: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        """The error's human-readable text, or an empty string."""
        return self.message or self.error or ""
