"""What the fake keeps per channel and bridge, and the handle a test drives a call with."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from voxtra.errors import VoxtraError
from voxtra.testing.fake_asterisk.media import FakeRtpEnd

__all__ = [
    "CallDriver",
    "FakeAsteriskError",
    "FakeBridge",
    "FakeCall",
    "FakePlayback",
    "FakeRecording",
]


class FakeAsteriskError(VoxtraError):
    """A test asked the fake for something it cannot do (no app connected, ...)."""


_ids = itertools.count(1)


def ari_timestamp() -> str:
    """Now, as ARI writes it: ``2026-11-22T00:08:22.138+0000``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def asterisk_id() -> str:
    """A channel id in Asterisk's own style (``<epoch>.<n>``)."""
    return f"{int(time.time())}.{next(_ids)}"


def sequence_number() -> int:
    return next(_ids)


@dataclass(eq=False)
class FakePlayback:
    id: str
    media: list[str]
    target_uri: str
    language: str = "en"
    state: str = "queued"
    index: int = 0
    timer: asyncio.TimerHandle | None = None

    @property
    def media_uri(self) -> str:
        return self.media[min(self.index, len(self.media) - 1)]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "media_uri": self.media_uri,
            "target_uri": self.target_uri,
            "language": self.language,
            "state": self.state,
        }
        if self.index + 1 < len(self.media):
            body["next_media_uri"] = self.media[self.index + 1]
        return body


@dataclass(eq=False)
class FakeRecording:
    name: str
    format: str
    target_uri: str
    state: str = "queued"
    started: float = field(default_factory=time.monotonic)
    terminate_on: str = ""
    timer: asyncio.TimerHandle | None = None
    duration: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "format": self.format,
            "state": self.state,
            "target_uri": self.target_uri,
        }
        if self.duration is not None:
            body["duration"] = self.duration
        return body


@dataclass(eq=False)
class FakeBridge:
    """A bridge as the fake keeps it; ``channels`` lists member ids in join order."""

    id: str
    name: str = ""
    bridge_type: str = "mixing"
    channels: list[str] = field(default_factory=list)
    creationtime: str = field(default_factory=ari_timestamp)
    moh: str | None = None
    apps: set[str] = field(default_factory=set)
    destroyed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "technology": "holding_bridge" if self.bridge_type == "holding" else "simple_bridge",
            "bridge_type": self.bridge_type,
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": list(self.channels),
            "creationtime": self.creationtime,
            "video_mode": "talker",
        }


class CallDriver(Protocol):
    """What a :class:`FakeCall` asks of the fake it lives in (:class:`FakeAsterisk`)."""

    channelvars: tuple[str, ...]

    def caller_presses(self, call: FakeCall, digit: str, duration_ms: int) -> None: ...

    def caller_hangs_up(self, call: FakeCall, cause: int) -> None: ...

    def far_end_answers(self, call: FakeCall) -> None: ...

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = ...) -> None: ...


class FakeCall:
    """One channel in the fake, and what a test does with it.

    Every channel is one (inbound calls, originated legs, snoops, ExternalMedia
    channels); tests mostly hold the inbound ones from :meth:`FakeAsterisk.incoming`
    and the outbound ones in :attr:`FakeAsterisk.originated`.
    """

    def __init__(
        self,
        fake: CallDriver,
        channel_id: str,
        name: str,
        *,
        kind: str,
        state: str = "Ring",
        caller: str = "",
        caller_name: str = "",
        context: str = "default",
        extension: str = "s",
        endpoint: str = "",
    ) -> None:
        self._fake = fake
        self.id = channel_id
        self.name = name
        self.kind = kind
        """``incoming``, ``originated``, ``snoop`` or ``external``."""
        self.state = state
        self.caller = caller
        self.caller_name = caller_name
        self.connected = ""
        self.context = context
        self.extension = extension
        self.priority = 1
        self.dialplan_app = ""
        self.dialplan_app_data = ""
        self.endpoint = endpoint
        """What was dialed (originated channels), e.g. ``PJSIP/bob``."""
        self.creationtime = ari_timestamp()
        self.app: str | None = None
        self.dialed = False
        self.pending_app: str | None = None
        """The app an originated channel enters once answered."""
        """The Stasis app the channel is in now (None: in the dialplan)."""
        self.args: list[str] = []
        self.subscribed: set[str] = set()
        self.variables: dict[str, str] = {}
        """Channel variables (set by the test or the app)."""
        self.played: list[str] = []
        """Media URIs played to this channel (or to a bridge it was in), in order."""
        self.recordings: list[str] = []
        """Names of the recordings made of this channel (live or stored)."""
        self.dtmf_sent: str = ""
        """Digits the app sent to the caller (``POST /channels/{id}/dtmf``)."""
        self.digits_pressed: str = ""
        self.transferred_to: str | None = None
        """``exten@context`` after ``continue``, the endpoint after ``redirect``, or the
        endpoint of the outbound leg it was bridged with."""
        self.hangup_cause: int | None = None
        self.held = False
        """The app indicated hold to the far end (``POST /channels/{id}/hold``)."""
        self.moh: str | None = None
        """The music-on-hold class playing to the channel (None: none)."""
        self.muted: set[str] = set()
        self.ringing = False
        self.silence = False
        self.bridge_id: str | None = None
        self.spied: FakeCall | None = None
        """For a snoop channel: the channel it listens to."""
        self.spy = "none"
        self.whisper = "none"
        """For a snoop channel: its ``spy`` and ``whisper`` directions (none/in/out/both)."""
        self.rtp: FakeRtpEnd | None = None
        self.media_ends: list[FakeRtpEnd] = []
        self._answered = asyncio.Event()
        self._ended = asyncio.Event()
        self._left_app = asyncio.Event()
        if state == "Up":
            self._answered.set()

    # -- state a test asserts on ------------------------------------------------------

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    @property
    def ended(self) -> bool:
        """True once the channel is destroyed (hung up, by either side)."""
        return self._ended.is_set()

    @property
    def on_hold(self) -> bool:
        """Held or hearing music on hold (what ``call.hold()`` does is the latter)."""
        return self.held or self.moh is not None

    @property
    def in_app(self) -> bool:
        return self.app is not None

    @property
    def audio_heard(self) -> bytes:
        """Audio the app sent to this call over RTP (the wire codec; slin as LE PCM16)."""
        return b"".join(bytes(end.heard) for end in self.media_ends)

    # -- the fake's bookkeeping (called by FakeAsterisk) -----------------------------------

    def mark_answered(self) -> None:
        self._answered.set()

    def mark_left_app(self) -> None:
        self._left_app.set()

    def mark_ended(self) -> None:
        self._ended.set()
        self._left_app.set()

    def __repr__(self) -> str:
        return f"FakeCall({self.id!r}, {self.name!r}, state={self.state!r})"

    # -- what the far end does ------------------------------------------------------

    async def press(self, digits: str, *, duration_ms: int = 100) -> None:
        """The caller presses keys: one ``ChannelDtmfReceived`` per digit."""
        for digit in digits:
            self._fake.caller_presses(self, digit, duration_ms)
            await asyncio.sleep(0)

    async def hang_up(self, cause: int = 16) -> None:
        """The caller hangs up (``cause`` 16: normal clearing)."""
        self._fake.caller_hangs_up(self, cause)
        await asyncio.sleep(0)

    async def answer(self) -> None:
        """The far end of a ringing outbound call picks up."""
        self._fake.far_end_answers(self)
        await asyncio.sleep(0)

    def send_audio(self, payload: bytes) -> None:
        """Queue caller audio for the app's ExternalMedia (RTP) streams of this call,
        in their wire codec (``slin``: little-endian PCM16). Silence is sent otherwise."""
        if not self.media_ends:
            raise FakeAsteriskError(f"call {self.id} has no RTP media attached to it")
        for end in self.media_ends:
            end.queue_audio(payload)

    async def wait_answered(self, timeout: float = 5.0) -> None:
        await self._wait(self._answered, timeout, "answered")

    async def wait_ended(self, timeout: float = 5.0) -> None:
        await self._wait(self._ended, timeout, "ended")

    async def wait_left_app(self, timeout: float = 5.0) -> None:
        """Until the channel leaves the Stasis app (continue, hangup)."""
        await self._wait(self._left_app, timeout, "left the app")

    async def wait_until(self, predicate: Callable[[FakeCall], bool], timeout: float = 5.0) -> None:
        """Until ``predicate(call)`` holds (checked each time the fake changes state)."""
        await self._fake.wait_until(lambda: predicate(self), timeout)

    async def _wait(self, event: asyncio.Event, timeout: float, what: str) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise FakeAsteriskError(f"call {self.id} was not {what} within {timeout} s") from None

    # -- the JSON Asterisk sends --------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": self.caller_name, "number": self.caller},
            "connected": {"name": "", "number": self.connected},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.extension,
                "priority": self.priority,
                "app_name": self.dialplan_app,
                "app_data": self.dialplan_app_data,
            },
            "creationtime": self.creationtime,
            "language": "en",
        }
        shown = {k: self.variables.get(k, "") for k in self._fake.channelvars}
        if shown:
            body["channelvars"] = shown
        return body
