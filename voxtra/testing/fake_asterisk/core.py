"""FakeAsterisk: an in-process ARI transport that keeps Asterisk's state itself.

It answers each REST request the way Asterisk 22 does (status codes, error messages and
JSON bodies as captured from the real one in ``tests/fixtures/ari``) and pushes the
events Asterisk would push, in Asterisk's order, to the events connections of the
Stasis apps concerned. ``tests/integration/test_fake_contract.py`` runs the same
scenarios against it and the real sandbox so the two cannot drift apart.

What it does not do: run a dialplan (``continue`` leaves the channel where it was sent,
except into the AMD step, :attr:`FakeAsterisk.amd_context`, which it plays;
originate's far end is scripted with :attr:`FakeAsterisk.dial_outcome`), Local channel
pairs (an originated ``Local/`` channel is one channel), WebSocket and AudioSocket media
(ExternalMedia speaks RTP only), real sound files (a playback "lasts"
:attr:`FakeAsterisk.playback_duration` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

from voxtra.ari.errors import AriConnectionError
from voxtra.ari.transport import AriRequest, AriResponse, AriTransport, EventConnection
from voxtra.testing.fake_asterisk.calls import (
    FakeAsteriskError,
    FakeBridge,
    FakeCall,
    FakePlayback,
    FakeRecording,
    ari_timestamp,
    asterisk_id,
    sequence_number,
)
from voxtra.testing.fake_asterisk.media import RTP_FORMATS, FakeRtpEnd, silent_wav


class ServableApp(Protocol):
    """What :meth:`FakeAsterisk.serve` needs of an app (:class:`voxtra.VoxtraApp`)."""

    def use_transport(self, transport: AriTransport) -> None: ...

    async def start(self, timeout: float = ...) -> None: ...

    async def stop(self, deadline: float | None = ...) -> None: ...


__all__ = ["DIAL_OUTCOMES", "FakeAsterisk", "ServableApp"]

ASTERISK_ID = "02:fc:00:00:00:fa"

CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    26: "Answered elsewhere",
    27: "Destination out of order",
    28: "Invalid number format (incomplete number)",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}

# DELETE /channels/{id}?reason=... (ARI's names; anything else is a 400).
HANGUP_REASONS = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 18,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}

DIAL_OUTCOMES = {
    # outcome: (Dial status, hangup cause); "answer" and "ring" are handled apart
    "busy": ("BUSY", 17),
    "noanswer": ("NOANSWER", 19),
    "congestion": ("CONGESTION", 34),
    "chanunavail": ("CHANUNAVAIL", 20),
}
"""Scripted far ends besides ``answer`` (picks up) and ``ring`` (rings until the test
calls :meth:`FakeCall.answer` or :meth:`FakeCall.hang_up`)."""

TECHNOLOGIES = ("PJSIP", "SIP", "Local", "IAX2", "DAHDI", "Test")
RECORDING_FORMATS = ("wav", "gsm", "ulaw", "alaw", "sln", "wav16", "g722")


class _Fail(Exception):
    def __init__(self, status: int, message: str, *, key: str = "message") -> None:
        self.status = status
        self.message = message
        self.key = key


_T = TypeVar("_T")


def _found(table: Mapping[str, _T], key: str, message: str, *, status: int = 404) -> _T:
    """``table[key]``, or Asterisk's answer when it has no such object (404 ``message``;
    a ``channel`` parameter naming none is a 400)."""
    found = table.get(key)
    if found is None:
        raise _Fail(status, message)
    return found


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    501: "Not Implemented",
}


def _json(body: Any, status: int = 200) -> AriResponse:
    return AriResponse(status, json.dumps(body).encode(), _REASONS.get(status, ""))


_NO_CONTENT = AriResponse(204, b"", "No Content")


class _EventConnection(EventConnection):
    def __init__(self, fake: FakeAsterisk, apps: Sequence[str]) -> None:
        self._fake = fake
        self.apps = set(apps)
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._closed = False

    def push(self, text: str) -> None:
        if not self._closed:
            self._queue.put_nowait(text)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    @property
    def closed(self) -> bool:
        return self._closed

    def drop(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
            self._fake._connection_closed(self)

    async def close(self) -> None:
        self.drop()


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: str


def _routes(table: Sequence[tuple[str, str, str]]) -> list[_Route]:
    out = []
    for method, template, handler in table:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        out.append(_Route(method, re.compile(f"^{regex}$"), handler))
    return out


_ROUTES = _routes(
    [
        ("GET", "/asterisk/info", "asterisk_info"),
        ("GET", "/asterisk/ping", "asterisk_ping"),
        ("GET", "/asterisk/variable", "global_get"),
        ("POST", "/asterisk/variable", "global_set"),
        ("GET", "/applications", "applications"),
        ("GET", "/applications/{app}", "application"),
        ("POST", "/applications/{app}/subscription", "subscribe"),
        ("DELETE", "/applications/{app}/subscription", "application"),
        ("PUT", "/applications/{app}/eventFilter", "event_filter"),
        ("GET", "/channels", "channels"),
        ("POST", "/channels", "originate"),
        ("POST", "/channels/create", "create"),
        ("POST", "/channels/externalMedia", "external_media"),
        ("GET", "/channels/{id}", "channel"),
        ("POST", "/channels/{id}", "originate_with_id"),
        ("DELETE", "/channels/{id}", "hangup"),
        ("POST", "/channels/{id}/answer", "answer"),
        ("POST", "/channels/{id}/ring", "ring"),
        ("DELETE", "/channels/{id}/ring", "ring_stop"),
        ("POST", "/channels/{id}/hold", "hold"),
        ("DELETE", "/channels/{id}/hold", "unhold"),
        ("POST", "/channels/{id}/moh", "moh"),
        ("DELETE", "/channels/{id}/moh", "moh_stop"),
        ("POST", "/channels/{id}/silence", "silence"),
        ("DELETE", "/channels/{id}/silence", "silence_stop"),
        ("POST", "/channels/{id}/mute", "mute"),
        ("DELETE", "/channels/{id}/mute", "unmute"),
        ("POST", "/channels/{id}/play", "play"),
        ("POST", "/channels/{id}/play/{playback}", "play"),
        ("POST", "/channels/{id}/record", "record"),
        ("POST", "/channels/{id}/snoop", "snoop"),
        ("POST", "/channels/{id}/snoop/{snoop}", "snoop"),
        ("POST", "/channels/{id}/continue", "continue_"),
        ("POST", "/channels/{id}/redirect", "redirect"),
        ("POST", "/channels/{id}/dtmf", "dtmf"),
        ("POST", "/channels/{id}/dial", "dial"),
        ("GET", "/channels/{id}/variable", "variable_get"),
        ("POST", "/channels/{id}/variable", "variable_set"),
        ("GET", "/channels/{id}/rtp_statistics", "rtp_statistics"),
        ("GET", "/bridges", "bridges"),
        ("POST", "/bridges", "bridge_create"),
        ("GET", "/bridges/{bridge}", "bridge"),
        ("POST", "/bridges/{bridge}", "bridge_create"),
        ("DELETE", "/bridges/{bridge}", "bridge_destroy"),
        ("POST", "/bridges/{bridge}/addChannel", "bridge_add"),
        ("POST", "/bridges/{bridge}/removeChannel", "bridge_remove"),
        ("POST", "/bridges/{bridge}/moh", "bridge_moh"),
        ("DELETE", "/bridges/{bridge}/moh", "bridge_moh_stop"),
        ("POST", "/bridges/{bridge}/play", "bridge_play"),
        ("POST", "/bridges/{bridge}/play/{playback}", "bridge_play"),
        ("POST", "/bridges/{bridge}/record", "bridge_record"),
        ("GET", "/playbacks/{playback}", "playback"),
        ("DELETE", "/playbacks/{playback}", "playback_stop"),
        ("POST", "/playbacks/{playback}/control", "playback_control"),
        ("GET", "/recordings/stored", "stored_list"),
        ("GET", "/recordings/stored/{name}", "stored"),
        ("DELETE", "/recordings/stored/{name}", "stored_delete"),
        ("GET", "/recordings/stored/{name}/file", "stored_file"),
        ("POST", "/recordings/stored/{name}/copy", "stored_copy"),
        ("GET", "/recordings/live/{name}", "live"),
        ("DELETE", "/recordings/live/{name}", "live_cancel"),
        ("POST", "/recordings/live/{name}/stop", "live_stop"),
        ("POST", "/recordings/live/{name}/pause", "live_pause"),
        ("DELETE", "/recordings/live/{name}/pause", "live_unpause"),
        ("POST", "/recordings/live/{name}/mute", "live_mute"),
        ("DELETE", "/recordings/live/{name}/mute", "live_unmute"),
        ("GET", "/endpoints", "endpoints"),
        ("GET", "/endpoints/{tech}", "endpoints_of"),
        ("GET", "/endpoints/{tech}/{resource}", "endpoint"),
    ]
)


class FakeAsterisk(AriTransport):
    """An in-process Asterisk for tests: pass it as an app's or client's transport.

    ``channelvars``: variable names shown in every channel's JSON, as ``channelvars`` in
    Asterisk's ``ari.conf`` does (none by default, like the sandbox).
    """

    base_url = "http://fake-asterisk.invalid:8088"

    def __init__(self, *, channelvars: Sequence[str] = ()) -> None:
        self.channelvars: tuple[str, ...] = tuple(channelvars)
        self.playback_duration = 0.0
        """Seconds each media item of a playback "plays" (0: finishes at once)."""
        self.missing_media: set[str] = set()
        """Media URIs (``sound:typo``) this Asterisk does not have. As Asterisk 22 does,
        a playback still starts; one whose last item is missing finishes "failed", and
        a missing item before the last is passed over."""
        self.dial_outcome = "answer"
        """How an originated call's far end reacts: ``answer``, ``ring`` (until the test
        acts on it), or one of :data:`DIAL_OUTCOMES` (``busy``, ``noanswer``, ...)."""
        self.dial_delay = 0.0
        """Seconds an originated call rings before :attr:`dial_outcome` happens."""
        self.endpoint_outcomes: dict[str, str] = {}
        """Per-endpoint outcome (``{"PJSIP/bob": "busy"}``), over :attr:`dial_outcome`."""
        self.reachable = True
        """False: every request and events connection fails as if Asterisk were down."""
        self.amd_context = "voxtra-amd"
        """The dialplan context the fake runs as the AMD step: ``continue`` into it sets
        ``AMDSTATUS``/``AMDCAUSE`` and returns the channel to ``${VOXTRA_AMD_APP}``."""
        self.dialplan: dict[str, dict[str, int]] | None = None
        """The dialplan, for ``DIALPLAN_EXISTS()`` reads and ``continue``: context ->
        extension -> how many priorities it has (literal names: no patterns). None (the
        default): the fake has none, like an Asterisk without func_dialplan: reading
        ``DIALPLAN_EXISTS()`` is a 500 and ``continue`` leaves the channel wherever it
        was sent. Given one, a ``continue`` to a place it lacks does what Asterisk 22
        does: the channel leaves the app and is destroyed (cause 0, no hangup request),
        unless the extension is missing and its context has an ``i`` or ``e`` one."""
        self.amd_outcome: tuple[str, str] = ("HUMAN", "HUMAN-800-800")
        self.amd_outcomes: dict[str, tuple[str, str]] = {}
        """Per-endpoint AMD ``(status, cause)``, over :attr:`amd_outcome`."""
        self.channels: dict[str, FakeCall] = {}
        """Live channels by id (any kind)."""
        self.calls: list[FakeCall] = []
        """Inbound calls from :meth:`incoming`, in order (ended ones included)."""
        self.originated: list[FakeCall] = []
        """Channels the app originated, in order (ended ones included)."""
        self.bridges: dict[str, FakeBridge] = {}
        self.playbacks: dict[str, FakePlayback] = {}
        self.live_recordings: dict[str, FakeRecording] = {}
        self.stored_recordings: dict[str, bytes] = {}
        """Stored recordings: name -> the WAV file's bytes."""
        self.global_variables: dict[str, str] = {}
        self.endpoints: dict[tuple[str, str], str] = {}
        """Known endpoints: (technology, resource) -> state."""
        self.requests: list[tuple[str, str]] = []
        """Every request received: (method, path), in order."""
        self.events: list[dict[str, Any]] = []
        """Every event sent, as JSON objects, in order."""
        self.connects = 0
        """Events connections opened so far."""
        self._connections: list[_EventConnection] = []
        self._registered: set[str] = set()
        self._disallowed: dict[str, set[str]] = {}  # per app: kinds its eventFilter drops
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # == the transport ================================================================

    async def handle_request(self, request: AriRequest) -> AriResponse:
        self.requests.append((request.method, request.path))
        if not self.reachable or self._closed:
            raise AriConnectionError(
                0, request.method, request.path, "FakeAsterisk is down (reachable=False)"
            )
        path = request.path.split("?", 1)[0].rstrip("/") or "/"
        known_path = False
        for route in _ROUTES:
            match = route.pattern.match(path)
            if match is None:
                continue
            known_path = True
            if route.method != request.method.upper():
                continue
            ids = {k: unquote(v) for k, v in match.groupdict().items()}
            handler = getattr(self, f"_r_{route.handler}")
            try:
                result = handler(request, **ids)
                if isinstance(result, Awaitable):
                    result = await result
            except _Fail as fail:
                return _json({fail.key: fail.message}, fail.status)
            finally:
                self._notify()
            assert isinstance(result, AriResponse)
            return result
        if known_path:
            return _json({"message": "Invalid method"}, 405)
        return _json({"message": "Resource not found"}, 404)

    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        if not self.reachable or self._closed:
            raise AriConnectionError(0, "GET", "/events", "FakeAsterisk is down (reachable=False)")
        connection = _EventConnection(self, apps)
        for app in apps:
            for other in self._connections:
                if app in other.apps:
                    # Asterisk hands the app to the newest connection and tells the old
                    # one so (ApplicationReplaced).
                    other.push(self._event_text(app, "ApplicationReplaced", {}))
                    other.apps.discard(app)
        self._connections.append(connection)
        self._registered.update(apps)
        self.connects += 1
        self._notify()
        return connection

    async def aclose(self) -> None:
        """Close the events connections and media sockets; cancel pending timers."""
        self._closed = True
        for connection in list(self._connections):
            connection.drop()
        for call in list(self.channels.values()):
            if call.rtp is not None:
                await call.rtp.close()
        for playback in self.playbacks.values():
            if playback.timer is not None:
                playback.timer.cancel()
        for recording in self.live_recordings.values():
            if recording.timer is not None:
                recording.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # == the test-facing API ===========================================================

    @property
    def apps(self) -> set[str]:
        """Stasis apps registered (an events connection for them is open)."""
        return set(self._registered)

    async def incoming(
        self,
        extension: str = "1000",
        caller: str = "",
        *,
        context: str = "default",
        caller_name: str = "",
        app: str | None = None,
        args: Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
        endpoint: str = "PJSIP/caller",
        channel_id: str | None = None,
    ) -> FakeCall:
        """A call comes in and enters the Stasis app (``StasisStart``, state Ring).

        ``args`` default to ``[extension]``, as the dialplan line
        ``Stasis(app,${EXTEN})`` the docs recommend passes. ``app`` defaults to the one
        registered app.
        """
        target = self._pick_app(app)
        technology, _, resource = endpoint.partition("/")
        self.endpoints.setdefault((technology, resource), "online")
        call = FakeCall(
            self,
            channel_id or asterisk_id(),
            f"{endpoint}-{sequence_number():08x}",
            kind="incoming",
            caller=caller,
            caller_name=caller_name,
            context=context,
            extension=extension,
        )
        call.variables.update(variables or {})
        self.channels[call.id] = call
        self.calls.append(call)
        self._enter_app(call, target, list(args) if args is not None else [extension])
        self._notify()
        await asyncio.sleep(0)
        return call

    def call(self, channel_id: str) -> FakeCall:
        """A channel by id, live or ended."""
        for call in [*self.channels.values(), *self.calls, *self.originated]:
            if call.id == channel_id:
                return call
        raise FakeAsteriskError(f"no channel {channel_id!r} in the fake")

    @property
    def answer_outbound(self) -> bool:
        """Shorthand: False makes originated calls go unanswered (``noanswer``)."""
        return self.dial_outcome == "answer"

    @answer_outbound.setter
    def answer_outbound(self, value: bool) -> None:
        self.dial_outcome = "answer" if value else "noanswer"

    def disconnect_events(self) -> None:
        """Drop every events connection (an outage seen from the app; it reconnects)."""
        for connection in list(self._connections):
            connection.drop()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Until ``predicate()`` holds: checked whenever the fake's state changes, and
        every 10 ms besides (a predicate may look at the app's state too)."""

        async def check() -> None:
            async with self._changed:
                while not predicate():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.01)

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise FakeAsteriskError(f"condition not met within {timeout} s") from None

    async def wait_connected(self, app: str | None = None, timeout: float = 5.0) -> None:
        """Until an events connection for ``app`` (any app if None) is open."""

        def registered() -> bool:
            return bool(self._registered) if app is None else app in self._registered

        await self.wait_until(registered, timeout)

    @contextlib.asynccontextmanager
    async def serve(self, app: ServableApp, *, timeout: float = 5.0) -> AsyncIterator[FakeAsterisk]:
        """Run ``app`` against this fake: ``async with fake.serve(app): ...``.

        Gives the app the fake as its transport (``app.use_transport``), starts it,
        and stops it on the way out.
        """
        app.use_transport(self)
        await app.start(timeout=timeout)
        try:
            yield self
        finally:
            await app.stop(deadline=0.5)

    # == internals: events ============================================================

    def _event_text(self, app: str, kind: str, fields: Mapping[str, Any]) -> str:
        body = {
            "type": kind,
            "timestamp": ari_timestamp(),
            "application": app,
            "asterisk_id": ASTERISK_ID,
            **fields,
        }
        self.events.append(body)
        # Compact, as Asterisk sends it (ari.conf ``pretty = no``): the app reads the
        # kind and channel id of some events from the text (voxtra.ari.events.peek_route).
        return json.dumps(body, separators=(",", ":"))

    def _emit(self, apps: set[str] | str | None, kind: str, **fields: Any) -> None:
        targets = {apps} if isinstance(apps, str) else set(apps or ())
        for app in sorted(targets):
            if kind in self._disallowed.get(app, ()):
                continue
            text = self._event_text(app, kind, fields)
            for connection in self._connections:
                if app in connection.apps:
                    connection.push(text)

    def _connection_closed(self, connection: _EventConnection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
        self._registered = {a for c in self._connections for a in c.apps}
        self._disallowed = {a: k for a, k in self._disallowed.items() if a in self._registered}
        self._notify()

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            self._spawn(notify())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        def run() -> None:
            callback()
            self._notify()

        return asyncio.get_running_loop().call_later(delay, run)

    # == internals: channel life ========================================================

    def _pick_app(self, app: str | None) -> str:
        if app is not None:
            if app not in self._registered:
                raise FakeAsteriskError(
                    f"no events connection for Stasis app {app!r} (registered: "
                    f"{sorted(self._registered) or 'none'}); Asterisk would hang the call up"
                )
            return app
        if len(self._registered) != 1:
            raise FakeAsteriskError(
                "say which Stasis app the call goes to (app=...): registered apps are "
                f"{sorted(self._registered) or 'none'}"
            )
        return next(iter(self._registered))

    def _enter_app(self, call: FakeCall, app: str, args: list[str]) -> None:
        call.app = app
        call.args = args
        call.subscribed.add(app)
        call.dialplan_app = "Stasis"
        call.dialplan_app_data = ",".join([app, *args])
        self._emit(app, "StasisStart", args=args, channel=call.to_json())

    def _leave_app(self, call: FakeCall) -> None:
        if call.app is None:
            return
        app, call.app = call.app, None
        self._emit(app, "StasisEnd", channel=call.to_json())
        call.mark_left_app()

    def _set_state(self, call: FakeCall, state: str) -> None:
        if call.state == state:
            return
        call.state = state
        self._emit(call.subscribed, "ChannelStateChange", channel=call.to_json())
        if state == "Up":
            call.mark_answered()

    def caller_presses(self, call: FakeCall, digit: str, duration_ms: int = 100) -> None:
        """The caller presses ``digit`` (what :meth:`FakeCall.press` does)."""
        if call.ended:
            raise FakeAsteriskError(f"call {call.id} has ended: nobody to press {digit!r}")
        call.digits_pressed += digit
        self._emit(
            call.subscribed,
            "ChannelDtmfReceived",
            digit=digit,
            duration_ms=duration_ms,
            channel=call.to_json(),
        )
        for recording in list(self.live_recordings.values()):
            if recording.target_uri == f"channel:{call.id}" and (
                digit in recording.terminate_on or recording.terminate_on == "any"
            ):
                self._finish_recording(recording, "done")
        self._notify()

    def caller_hangs_up(self, call: FakeCall, cause: int = 16) -> None:
        """The caller (or far end) hangs up (what :meth:`FakeCall.hang_up` does)."""
        self._hangup(call, cause, soft=None)

    def _hangup(
        self, call: FakeCall, cause: int, *, soft: bool | None, requested: bool = True
    ) -> None:
        """``requested``: a ChannelHangupRequest comes first (not when the PBX ends it)."""
        if call.ended or call.id not in self.channels:
            return
        # An ARI hangup is a soft hangup: Asterisk's event then carries the softhangup
        # flag (AST_SOFTHANGUP_EXPLICIT, 32) as its "cause", not the hangup cause.
        fields: dict[str, Any] = {"cause": 32 if soft else cause, "channel": call.to_json()}
        if soft is not None:
            fields["soft"] = soft
        if requested:
            self._emit(call.subscribed, "ChannelHangupRequest", **fields)
        for playback in list(self.playbacks.values()):
            if playback.target_uri == f"channel:{call.id}":
                self._finish_playback(playback, "done")
        for recording in list(self.live_recordings.values()):
            if recording.target_uri == f"channel:{call.id}":
                self._finish_recording(recording, "done")
        if call.bridge_id is not None:
            bridge = self.bridges.get(call.bridge_id)
            if bridge is not None:
                self._leave_bridge(bridge, call)
        self._leave_app(call)
        call.hangup_cause = cause
        del self.channels[call.id]
        self._emit(
            call.subscribed,
            "ChannelDestroyed",
            cause=cause,
            cause_txt=CAUSE_TEXT.get(cause, "Unknown"),
            channel=call.to_json(),
        )
        call.mark_ended()
        if call.rtp is not None:
            self._spawn(call.rtp.close())
        for other in list(self.channels.values()):
            if other.spied is call:
                self._hangup(other, 16, soft=None)
        self._notify()

    def far_end_answers(self, call: FakeCall) -> None:
        """The far end picks up (what :meth:`FakeCall.answer` does)."""
        if call.ended:
            raise FakeAsteriskError(f"call {call.id} has ended")
        if call.state == "Up":
            return
        self._set_state(call, "Up")
        if call.kind == "originated":
            self._dial_event(call, "ANSWER")
            app, call.pending_app = call.pending_app, None
            if app is not None:
                self._enter_app(call, app, call.args)

    def _dial_event(self, call: FakeCall, status: str) -> None:
        self._emit(
            call.subscribed,
            "Dial",
            dialstatus=status,
            dialstring=call.endpoint.partition("/")[2],
            forward="",
            peer=call.to_json(),
        )

    def _channel(self, channel_id: str, message: str = "Channel not found") -> FakeCall:
        return _found(self.channels, channel_id, message)

    def _stasis_channel(self, channel_id: str) -> FakeCall:
        call = self._channel(channel_id)
        if call.app is None:
            raise _Fail(409, "Channel not in Stasis application")
        return call

    # == internals: playbacks and recordings ==========================================

    def _start_playback(
        self, target: str, media: list[str], playback_id: str | None, listeners: list[FakeCall]
    ) -> FakePlayback:
        playback = FakePlayback(playback_id or str(uuid.uuid4()), media, target)
        self.playbacks[playback.id] = playback
        apps = self._target_apps(target)
        for call in listeners:
            call.played.extend(media)

        def start() -> None:
            if playback.state != "queued":
                return
            playback.state = "playing"
            self._emit(apps, "PlaybackStarted", playback=playback.to_json())
            playback.timer = self._later(self.playback_duration, step)

        def step() -> None:
            if playback.state not in ("playing", "paused"):
                return
            if playback.index + 1 < len(playback.media):
                playback.index += 1
                self._emit(apps, "PlaybackContinuing", playback=playback.to_json())
                playback.timer = self._later(self.playback_duration, step)
            else:
                missing = playback.media[playback.index] in self.missing_media
                self._finish_playback(playback, "failed" if missing else "done")

        playback.timer = self._later(0, start)
        return playback

    def _target_apps(self, target: str) -> set[str]:
        kind, _, ident = target.partition(":")
        if kind == "channel":
            call = self.channels.get(ident)
            return set(call.subscribed) if call else set()
        bridge = self.bridges.get(ident)
        return set(bridge.apps) if bridge else set()

    def _finish_playback(self, playback: FakePlayback, state: str) -> None:
        if self.playbacks.pop(playback.id, None) is None:
            return
        if playback.timer is not None:
            playback.timer.cancel()
        was_started = playback.state != "queued"
        playback.state = state
        if was_started:
            self._emit(
                self._target_apps(playback.target_uri),
                "PlaybackFinished",
                playback=playback.to_json(),
            )

    def _start_recording(
        self, target: str, request: AriRequest, listeners: list[FakeCall]
    ) -> FakeRecording:
        params = request.params
        name = params.get("name", "")
        fmt = params.get("format", "")
        if not name:
            raise _Fail(400, "Recording name is required")
        if not fmt:
            raise _Fail(400, "Recording format is required")
        if fmt not in RECORDING_FORMATS:
            raise _Fail(422, "specified format is unknown on this system")
        if_exists = params.get("ifExists", "fail")
        if if_exists not in ("fail", "overwrite", "append"):
            raise _Fail(400, "ifExists must be fail, overwrite or append")
        if name in self.live_recordings or (name in self.stored_recordings and if_exists == "fail"):
            raise _Fail(409, f"Recording '{name}' already exists and can not be overwritten")
        recording = FakeRecording(name, fmt, target, terminate_on=params.get("terminateOn", ""))
        if recording.terminate_on == "none":
            recording.terminate_on = ""
        self.live_recordings[name] = recording
        for call in listeners:
            call.recordings.append(name)
        apps = self._target_apps(target)

        def start() -> None:
            if recording.state != "queued":
                return
            recording.state = "recording"
            recording.started = time.monotonic()
            self._emit(apps, "RecordingStarted", recording=recording.to_json())

        self._later(0, start)
        limit = int(params.get("maxDurationSeconds", "0") or 0)
        if limit > 0:
            recording.timer = self._later(limit, lambda: self._finish_recording(recording, "done"))
        return recording

    def _finish_recording(self, recording: FakeRecording, state: str) -> None:
        if self.live_recordings.pop(recording.name, None) is None:
            return
        if recording.timer is not None:
            recording.timer.cancel()
        apps = self._target_apps(recording.target_uri)
        if recording.state == "queued":
            # stopped before it started: Asterisk still says it started
            recording.state = "recording"
            self._emit(apps, "RecordingStarted", recording=recording.to_json())
        seconds = max(0.0, time.monotonic() - recording.started)
        recording.duration = int(seconds)
        recording.state = state
        if state == "done":
            self.stored_recordings[recording.name] = silent_wav(seconds)
        self._emit(apps, "RecordingFinished", recording=recording.to_json())

    # == internals: bridges ===========================================================

    def _join_bridge(self, bridge: FakeBridge, call: FakeCall) -> None:
        if call.bridge_id == bridge.id:
            return
        if call.bridge_id is not None and call.bridge_id in self.bridges:
            self._leave_bridge(self.bridges[call.bridge_id], call)
        bridge.channels.append(call.id)
        bridge.apps.update(call.subscribed)
        call.bridge_id = bridge.id
        self._emit(
            call.subscribed, "ChannelEnteredBridge", bridge=bridge.to_json(), channel=call.to_json()
        )
        members = [self.channels[m] for m in bridge.channels if m in self.channels]
        for member in members:
            for other in members:
                if other is member:
                    continue
                if other.kind == "originated" and member.kind == "incoming":
                    member.transferred_to = other.endpoint
                source = member.spied or member
                if other.rtp is not None and other.rtp not in source.media_ends:
                    source.media_ends.append(other.rtp)

    def _leave_bridge(self, bridge: FakeBridge, call: FakeCall) -> None:
        if call.id in bridge.channels:
            bridge.channels.remove(call.id)
        call.bridge_id = None
        self._emit(
            call.subscribed, "ChannelLeftBridge", bridge=bridge.to_json(), channel=call.to_json()
        )

    def _bridge(self, bridge_id: str) -> FakeBridge:
        return _found(self.bridges, bridge_id, "Bridge not found")

    def _channel_params(self, request: AriRequest) -> list[str]:
        raw = request.params.get("channel", "")
        if not raw:
            raise _Fail(400, "Missing parameter channel")
        return [c for c in raw.split(",") if c]

    # == REST handlers: asterisk, applications ========================================

    def _r_asterisk_info(self, request: AriRequest) -> AriResponse:
        parts = {
            "build": {
                "os": "Linux",
                "kernel": "fake",
                "options": "",
                "machine": "fake",
                "date": "2026-01-01 00:00:00 UTC",
                "user": "voxtra",
            },
            "system": {"version": "22.0.0-fake", "entity_id": ASTERISK_ID},
            "config": {"name": "", "default_language": "en", "setid": {"user": "", "group": ""}},
            "status": {"startup_time": ari_timestamp(), "last_reload_time": ari_timestamp()},
        }
        only = [p for p in request.params.get("only", "").split(",") if p]
        return _json({k: v for k, v in parts.items() if not only or k in only})

    def _r_asterisk_ping(self, request: AriRequest) -> AriResponse:
        return _json({"asterisk_id": ASTERISK_ID, "ping": "pong", "timestamp": ari_timestamp()})

    def _r_global_get(self, request: AriRequest) -> AriResponse:
        name = request.params.get("variable", "")
        if not name:
            raise _Fail(400, "Variable name is required")
        return _json({"value": self.global_variables.get(name, "")})

    def _r_global_set(self, request: AriRequest) -> AriResponse:
        name = request.params.get("variable", "")
        if not name:
            raise _Fail(400, "Variable name is required")
        self.global_variables[name] = request.params.get("value", "")
        return _NO_CONTENT

    def _application_json(self, app: str) -> dict[str, Any]:
        return {
            "name": app,
            "channel_ids": sorted(c.id for c in self.channels.values() if app in c.subscribed),
            "bridge_ids": sorted(b.id for b in self.bridges.values() if app in b.apps),
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [{"type": k} for k in sorted(self._disallowed.get(app, ()))],
        }

    def _r_event_filter(self, request: AriRequest, app: str) -> AriResponse:
        # Only "disallowed" is played (what VoxtraApp.ignored_events sends).
        if app not in self._registered:
            raise _Fail(404, "Application not found")
        body = request.json if isinstance(request.json, dict) else {}
        self._disallowed[app] = {e["type"] for e in body.get("disallowed", ())}
        return _json(self._application_json(app))

    def _r_applications(self, request: AriRequest) -> AriResponse:
        return _json([self._application_json(a) for a in sorted(self._registered)])

    def _r_application(self, request: AriRequest, app: str) -> AriResponse:
        # Asterisk keeps a deserted app listed while channels are still in it.
        if app not in self._registered and not any(c.app == app for c in self.channels.values()):
            raise _Fail(404, "Application not found")
        return _json(self._application_json(app))

    def _r_subscribe(self, request: AriRequest, app: str) -> AriResponse:
        if app not in self._registered:
            raise _Fail(404, "Application not found")
        for source in request.params.get("eventSource", "").split(","):
            kind, _, ident = source.partition(":")
            if kind == "channel" and ident in self.channels:
                self.channels[ident].subscribed.add(app)
            elif kind == "bridge" and ident in self.bridges:
                self.bridges[ident].apps.add(app)
            elif source:
                raise _Fail(422, "Event source does not exist")
        return _json(self._application_json(app))

    # == REST handlers: channels =======================================================

    def _r_channels(self, request: AriRequest) -> AriResponse:
        return _json([c.to_json() for c in self.channels.values()])

    def _r_channel(self, request: AriRequest, id: str) -> AriResponse:
        return _json(self._channel(id).to_json())

    def _r_originate_with_id(self, request: AriRequest, id: str) -> AriResponse:
        params = dict(request.params)
        params["channelId"] = id
        return self._originate(request, params, dial=True)

    def _r_originate(self, request: AriRequest) -> AriResponse:
        return self._originate(request, dict(request.params), dial=True)

    def _r_create(self, request: AriRequest) -> AriResponse:
        if not request.params.get("app"):
            raise _Fail(400, "Missing parameter app")
        return self._originate(request, dict(request.params), dial=False)

    def _originate(self, request: AriRequest, params: dict[str, str], *, dial: bool) -> AriResponse:
        endpoint = params.get("endpoint", "")
        if not endpoint:
            raise _Fail(400, "Endpoint must be specified")
        app = params.get("app", "")
        if dial and not app and not params.get("extension"):
            raise _Fail(400, "Application or extension must be specified")
        technology, _, resource = endpoint.partition("/")
        if technology not in TECHNOLOGIES or not resource:
            raise _Fail(500, "Allocation failed", key="error")
        channel_id = params.get("channelId") or asterisk_id()
        if channel_id in self.channels:
            raise _Fail(409, "Channel with given unique ID already exists")
        exten, _, context = resource.partition("@")
        if technology == "Local":
            name = f"Local/{resource}-{sequence_number():08x};1"
        else:
            name = f"{endpoint}-{sequence_number():08x}"
        caller_name, caller_number = _parse_caller_id(params.get("callerId", ""))
        call = FakeCall(
            self,
            channel_id,
            name,
            kind="originated",
            state="Down",
            caller=caller_number,
            caller_name=caller_name,
            context=context or params.get("context", "default") or "default",
            extension=exten if technology == "Local" else params.get("extension", "s") or "s",
            endpoint=endpoint,
        )
        call.dialplan_app, call.dialplan_app_data = "AppDial2", "(Outgoing Line)"
        call.variables.update(_body_variables(request))
        raw_args = params.get("appArgs", "")
        call.args = raw_args.split(",") if raw_args else []
        if app:
            call.subscribed.add(app)
        self.channels[call.id] = call
        self.originated.append(call)
        body = call.to_json()
        if dial:
            self._later(0, lambda: self._dial(call, app or None))
        else:
            # Measured: a created channel is in the app at once (StasisStart, Down);
            # dialing it later brings no second StasisStart.
            self._enter_app(call, app, call.args)
        return _json(body)

    def _dial(self, call: FakeCall, app: str | None) -> None:
        if call.ended:
            return
        call.dialed = True
        self._dial_event(call, "")
        outcome = self.endpoint_outcomes.get(call.endpoint, self.dial_outcome)

        def settle() -> None:
            if call.ended or call.state == "Up":
                return
            if outcome == "answer":
                if app is not None:
                    call.pending_app = app
                elif call.app is None:
                    call.dialplan_app, call.dialplan_app_data = "", ""
                self.far_end_answers(call)
            elif outcome == "ring":
                call.pending_app = app
                call.ringing = True
                # Measured on 22.10.1 (a SIP phone ringing): state Ringing, then Dial
                # RINGING, before any answer.
                self._set_state(call, "Ringing")
                self._dial_event(call, "RINGING")
            else:
                status, cause = DIAL_OUTCOMES.get(outcome, ("CHANUNAVAIL", 20))
                if call.endpoint.startswith("Local/"):
                    # Measured: a Local channel ends with cause 0; only Dial says why.
                    cause = 0
                self._dial_event(call, status)
                self._hangup(call, cause, soft=None)

        if self.dial_delay > 0:
            self._later(self.dial_delay, settle)
        else:
            settle()

    def _r_dial(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        if call.state == "Up" or call.dialed:
            raise _Fail(409, "Channel is not in the 'Down' state")
        call.dialed = True
        self._later(0, lambda: self._dial(call, None))
        return _NO_CONTENT

    def _r_hangup(self, request: AriRequest, id: str) -> AriResponse:
        call = self._channel(id)
        reason = request.params.get("reason")
        code = request.params.get("reason_code")
        if reason is not None and reason not in HANGUP_REASONS:
            raise _Fail(400, "Invalid reason for hangup reason provided")
        cause = int(code) if code else HANGUP_REASONS.get(reason or "normal", 16)
        self._hangup(call, cause, soft=True)
        return _NO_CONTENT

    def _r_answer(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        self._set_state(call, "Up")
        return _NO_CONTENT

    def _r_ring(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).ringing = True
        return _NO_CONTENT

    def _r_ring_stop(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).ringing = False
        return _NO_CONTENT

    def _r_hold(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).held = True
        return _NO_CONTENT

    def _r_unhold(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).held = False
        return _NO_CONTENT

    def _r_moh(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).moh = request.params.get("mohClass") or "default"
        return _NO_CONTENT

    def _r_moh_stop(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).moh = None
        return _NO_CONTENT

    def _r_silence(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).silence = True
        return _NO_CONTENT

    def _r_silence_stop(self, request: AriRequest, id: str) -> AriResponse:
        self._stasis_channel(id).silence = False
        return _NO_CONTENT

    def _direction(self, request: AriRequest) -> set[str]:
        direction = request.params.get("direction", "both")
        if direction not in ("both", "in", "out"):
            raise _Fail(400, "Invalid direction specified")
        return {"in", "out"} if direction == "both" else {direction}

    def _r_mute(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        call.muted |= self._direction(request)
        return _NO_CONTENT

    def _r_unmute(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        call.muted -= self._direction(request)
        return _NO_CONTENT

    def _media(self, request: AriRequest) -> list[str]:
        media = [m for m in request.params.get("media", "").split(",") if m]
        if not media:
            raise _Fail(500, "Failed to queue media for playback")
        return media

    def _r_play(self, request: AriRequest, id: str, playback: str | None = None) -> AriResponse:
        call = self._stasis_channel(id)
        media = self._media(request)
        if playback is not None and playback in self.playbacks:
            raise _Fail(409, "A playback with the same ID already exists")
        started = self._start_playback(f"channel:{call.id}", media, playback, [call])
        return _json(started.to_json())

    def _r_record(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        recording = self._start_recording(f"channel:{call.id}", request, [call])
        return _json(recording.to_json())

    def _r_snoop(self, request: AriRequest, id: str, snoop: str | None = None) -> AriResponse:
        spy = request.params.get("spy", "none")
        whisper = request.params.get("whisper", "none")
        if spy == "none" and whisper == "none":
            raise _Fail(400, "Direction must be specified for at least spy or whisper")
        app = request.params.get("app", "")
        if not app:
            raise _Fail(400, "Missing parameter app")
        spied = self._channel(id)
        snoop_id = snoop or asterisk_id()
        if snoop_id in self.channels:
            raise _Fail(409, "Channel with given unique ID already exists")
        channel = FakeCall(
            self,
            snoop_id,
            f"Snoop/{spied.id}-{sequence_number():08x}",
            kind="snoop",
            state="Up",
            context="default",
            extension="s",
        )
        channel.spied = spied
        channel.spy, channel.whisper = spy, whisper
        self.channels[channel.id] = channel
        body = channel.to_json()
        raw_args = request.params.get("appArgs", "")
        args = raw_args.split(",") if raw_args else []
        self._later(0, lambda: self._enter_app(channel, app, args) if not channel.ended else None)
        return _json(body)

    def _r_continue_(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        params = request.params
        # As Asterisk 22 fills the blanks (measured): no context is the channel's own,
        # and its extension unless one is given; a context alone is its "s".
        given = params.get("context")
        call.extension = params.get("extension") or ("s" if given else call.extension)
        call.context = given or call.context
        call.priority = int(params.get("priority") or 1)
        call.transferred_to = f"{call.extension}@{call.context}"
        if call.bridge_id is not None and call.bridge_id in self.bridges:
            self._leave_bridge(self.bridges[call.bridge_id], call)
        self._leave_app(call)
        call.dialplan_app, call.dialplan_app_data = "", ""
        if call.context == self.amd_context:
            self._run_amd(call)
        elif self.dialplan is not None:
            self._run_dialplan(call)
        return _NO_CONTENT

    def _run_dialplan(self, call: FakeCall) -> None:
        """Where a continued channel lands in :attr:`dialplan` (it runs nothing there)."""
        if self._dialplan_has(call.context, call.extension, str(call.priority)):
            return
        if not self._dialplan_has(call.context, call.extension, "1"):
            for handler in ("i", "e"):  # the PBX's invalid-extension handlers
                if self._dialplan_has(call.context, handler, "1"):
                    call.extension, call.priority = handler, 1
                    return
        # Asterisk 22 measured: StasisEnd, then ChannelDestroyed with cause 0 and no
        # ChannelHangupRequest (nobody asked for the hangup: the PBX found nothing).
        self._later(0, lambda: self._hangup(call, 0, soft=None, requested=False))

    def _dialplan_has(self, context: str, exten: str | None, priority: str | None) -> bool:
        """``DIALPLAN_EXISTS(context[,exten[,priority]])`` of :attr:`dialplan`."""
        extensions = (self.dialplan or {}).get(context)
        if extensions is None:
            return False
        if exten is None:
            return True
        count = extensions.get(exten, 0)
        if priority is None:
            return count >= 1
        # Asterisk 22 answers 0 for a priority that is no number (measured: "x").
        return priority.isdigit() and 1 <= int(priority) <= count

    def _run_amd(self, call: FakeCall) -> None:
        """The AMD step of the shipped dialplan: AMD(), then Stasis with the verdict."""
        status, cause = self.amd_outcomes.get(call.endpoint, self.amd_outcome)
        call.variables.update(AMDSTATUS=status, AMDCAUSE=cause)
        app = call.variables.get("VOXTRA_AMD_APP", "")
        if app:
            self._later(
                0,
                lambda: (
                    None
                    if call.ended
                    else self._enter_app(call, app, ["voxtra-amd", status, cause])
                ),
            )

    def _r_redirect(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        endpoint = request.params.get("endpoint", "")
        if not endpoint:
            raise _Fail(400, "Required parameter endpoint not provided")
        technology = endpoint.partition("/")[0]
        if technology not in TECHNOLOGIES:
            raise _Fail(422, "Endpoint technology is not supported")
        call.transferred_to = endpoint
        self._later(0, lambda: self._hangup(call, 16, soft=None))
        return _NO_CONTENT

    def _r_dtmf(self, request: AriRequest, id: str) -> AriResponse:
        call = self._stasis_channel(id)
        digits = request.params.get("dtmf", "")
        if not digits:
            raise _Fail(400, "DTMF is required")
        call.dtmf_sent += digits
        return _NO_CONTENT

    def _r_variable_get(self, request: AriRequest, id: str) -> AriResponse:
        name = request.params.get("variable", "")
        if not name:
            raise _Fail(400, "Variable name is required")
        call = self._channel(id, "Provided channel was not found")
        function, _, args = name.partition("(")
        if function == "DIALPLAN_EXISTS" and args.endswith(")") and self.dialplan is not None:
            context, exten, priority = [*args[:-1].split(",", 2), None, None][:3]
            if not context:  # Asterisk 22: "DIALPLAN_EXISTS()" is its 500 (measured)
                raise _Fail(500, "Unable to read provided function")
            found = self._dialplan_has(context, exten, priority)
            return _json({"value": "1" if found else "0"})
        if name not in call.variables:
            if name.endswith(")"):  # a dialplan function the fake cannot read (Asterisk 22)
                raise _Fail(500, "Unable to read provided function")
            raise _Fail(404, "Provided variable was not found")
        return _json({"value": call.variables[name]})

    def _r_variable_set(self, request: AriRequest, id: str) -> AriResponse:
        name = request.params.get("variable", "")
        if not name:
            raise _Fail(400, "Variable name is required")
        call = self._channel(id)
        value = request.params.get("value", "")
        call.variables[name] = value
        self._emit(
            call.subscribed, "ChannelVarset", variable=name, value=value, channel=call.to_json()
        )
        return _NO_CONTENT

    def _r_rtp_statistics(self, request: AriRequest, id: str) -> AriResponse:
        call = self._channel(id)
        if call.rtp is None:  # Asterisk 22's answer for a Local channel (measured)
            raise _Fail(403, "Unsupported channel type")
        return _json(
            {
                "txcount": call.rtp.packets_sent,
                "rxcount": call.rtp.packets_received,
                "local_ssrc": 0,
                "remote_ssrc": 0,
            }
        )

    async def _r_external_media(self, request: AriRequest) -> AriResponse:
        params = request.params
        app = params.get("app", "")
        if not app:
            raise _Fail(400, "Missing parameter app")
        encapsulation = params.get("encapsulation", "rtp")
        transport = params.get("transport", "udp")
        if encapsulation != "rtp" or transport != "udp":
            raise _Fail(
                501,
                f"FakeAsterisk speaks RTP only (encapsulation=rtp, transport=udp), not "
                f"encapsulation={encapsulation} transport={transport}: test WebSocket and "
                "AudioSocket media against the real sandbox",
            )
        host_port = params.get("external_host", "")
        if not host_port:
            raise _Fail(400, "external_host is required for all but websocket server connections")
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise _Fail(400, "external_host must be host:port")
        fmt = RTP_FORMATS.get(params.get("format", ""))
        if fmt is None:
            raise _Fail(500, "An internal error prevented this request from being handled")
        channel_id = params.get("channelId") or asterisk_id()
        if channel_id in self.channels:
            raise _Fail(409, "Channel with given unique ID already exists")
        end = FakeRtpEnd(fmt, (host, int(port)))
        end.on_receive = self._notify
        await end.open()
        local_host, local_port = end.local
        call = FakeCall(
            self,
            channel_id,
            f"UnicastRTP/{host_port}-0x{sequence_number():x}",
            kind="external",
            state="Down",
        )
        call.rtp = end
        call.variables.update(
            {"UNICASTRTP_LOCAL_ADDRESS": local_host, "UNICASTRTP_LOCAL_PORT": str(local_port)}
        )
        call.variables.update(_body_variables(request))
        self.channels[call.id] = call
        body = call.to_json()
        body["channelvars"] = {
            "UNICASTRTP_LOCAL_ADDRESS": local_host,
            "UNICASTRTP_LOCAL_PORT": str(local_port),
        }
        raw_args = params.get("data", "")
        args = [raw_args] if raw_args else []
        # In Stasis only after the answer, as in Asterisk: bridging it before its
        # StasisStart is a 422 there too (seen in the contract test).
        self._later(0, lambda: None if call.ended else self._enter_app(call, app, args))
        return _json(body)

    # == REST handlers: bridges =========================================================

    def _r_bridges(self, request: AriRequest) -> AriResponse:
        return _json([b.to_json() for b in self.bridges.values()])

    def _r_bridge(self, request: AriRequest, bridge: str) -> AriResponse:
        return _json(self._bridge(bridge).to_json())

    def _r_bridge_create(self, request: AriRequest, bridge: str | None = None) -> AriResponse:
        bridge_id = bridge or request.params.get("bridgeId") or str(uuid.uuid4())
        types = request.params.get("type", "mixing").split(",")
        kind = "holding" if "holding" in types else "mixing"
        existing = self.bridges.get(bridge_id)
        if existing is not None:
            return _json(existing.to_json())
        created = FakeBridge(bridge_id, request.params.get("name", ""), kind)
        self.bridges[bridge_id] = created
        return _json(created.to_json())

    def _r_bridge_destroy(self, request: AriRequest, bridge: str) -> AriResponse:
        found = self._bridge(bridge)
        for channel_id in list(found.channels):
            call = self.channels.get(channel_id)
            if call is not None:
                self._leave_bridge(found, call)
        del self.bridges[found.id]
        found.destroyed = True
        self._emit(found.apps, "BridgeDestroyed", bridge=found.to_json())
        return _NO_CONTENT

    def _bridge_members(
        self, request: AriRequest, leaving: FakeBridge | None = None
    ) -> list[FakeCall]:
        """The ``channel`` parameter's channels, each checked as Asterisk checks them
        before a bridge adds or removes any (400 unknown, 422 not in Stasis; with
        ``leaving``, 422 not in that bridge)."""
        calls = []
        for channel_id in self._channel_params(request):
            call = _found(self.channels, channel_id, "Channel not found", status=400)
            if call.app is None:
                raise _Fail(422, "Channel not in Stasis application")
            if leaving is not None and call.id not in leaving.channels:
                raise _Fail(422, "Channel not in this bridge")
            calls.append(call)
        return calls

    def _r_bridge_add(self, request: AriRequest, bridge: str) -> AriResponse:
        found = self._bridge(bridge)
        for call in self._bridge_members(request):
            self._join_bridge(found, call)
        return _NO_CONTENT

    def _r_bridge_remove(self, request: AriRequest, bridge: str) -> AriResponse:
        found = self._bridge(bridge)
        for call in self._bridge_members(request, leaving=found):
            self._leave_bridge(found, call)
        return _NO_CONTENT

    def _r_bridge_moh(self, request: AriRequest, bridge: str) -> AriResponse:
        self._bridge(bridge).moh = request.params.get("mohClass") or "default"
        return _NO_CONTENT

    def _r_bridge_moh_stop(self, request: AriRequest, bridge: str) -> AriResponse:
        self._bridge(bridge).moh = None
        return _NO_CONTENT

    def _r_bridge_play(
        self, request: AriRequest, bridge: str, playback: str | None = None
    ) -> AriResponse:
        found = self._bridge(bridge)
        media = self._media(request)
        if playback is not None and playback in self.playbacks:
            raise _Fail(409, "A playback with the same ID already exists")
        listeners = [self.channels[c] for c in found.channels if c in self.channels]
        started = self._start_playback(f"bridge:{found.id}", media, playback, listeners)
        return _json(started.to_json())

    def _r_bridge_record(self, request: AriRequest, bridge: str) -> AriResponse:
        found = self._bridge(bridge)
        listeners = [self.channels[c] for c in found.channels if c in self.channels]
        recording = self._start_recording(f"bridge:{found.id}", request, listeners)
        return _json(recording.to_json())

    # == REST handlers: playbacks, recordings, endpoints =================================

    def _playback(self, playback_id: str) -> FakePlayback:
        return _found(self.playbacks, playback_id, "Playback not found")

    def _r_playback(self, request: AriRequest, playback: str) -> AriResponse:
        return _json(self._playback(playback).to_json())

    def _r_playback_stop(self, request: AriRequest, playback: str) -> AriResponse:
        self._finish_playback(self._playback(playback), "done")
        return _NO_CONTENT

    def _r_playback_control(self, request: AriRequest, playback: str) -> AriResponse:
        found = self._playback(playback)
        operation = request.params.get("operation", "")
        if operation not in ("restart", "pause", "unpause", "reverse", "forward"):
            raise _Fail(400, "Invalid operation")
        if found.state == "queued":
            raise _Fail(409, "Playback not in a state to accept control")
        if operation == "pause":
            found.state = "paused"
        elif operation == "unpause":
            found.state = "playing"
        return _NO_CONTENT

    def _r_stored_list(self, request: AriRequest) -> AriResponse:
        return _json([{"name": n, "format": "wav"} for n in self.stored_recordings])

    def _stored(self, name: str) -> bytes:
        return _found(self.stored_recordings, name, "Recording not found")

    def _r_stored(self, request: AriRequest, name: str) -> AriResponse:
        self._stored(name)
        return _json({"name": name, "format": "wav"})

    def _r_stored_delete(self, request: AriRequest, name: str) -> AriResponse:
        self._stored(name)
        del self.stored_recordings[name]
        return _NO_CONTENT

    def _r_stored_file(self, request: AriRequest, name: str) -> AriResponse:
        return AriResponse(200, self._stored(name), "OK")

    def _r_stored_copy(self, request: AriRequest, name: str) -> AriResponse:
        data = self._stored(name)
        destination = request.params.get("destinationRecordingName", "")
        if not destination:
            raise _Fail(400, "Missing parameter destinationRecordingName")
        if destination in self.stored_recordings:
            raise _Fail(409, "A recording with the same name already exists on the system")
        self.stored_recordings[destination] = data
        return _json({"name": destination, "format": "wav"})

    def _live(self, name: str) -> FakeRecording:
        return _found(self.live_recordings, name, "Recording not found")

    def _r_live(self, request: AriRequest, name: str) -> AriResponse:
        return _json(self._live(name).to_json())

    def _r_live_stop(self, request: AriRequest, name: str) -> AriResponse:
        self._finish_recording(self._live(name), "done")
        return _NO_CONTENT

    def _r_live_cancel(self, request: AriRequest, name: str) -> AriResponse:
        self._finish_recording(self._live(name), "canceled")
        return _NO_CONTENT

    def _r_live_pause(self, request: AriRequest, name: str) -> AriResponse:
        self._live(name).state = "paused"
        return _NO_CONTENT

    def _r_live_unpause(self, request: AriRequest, name: str) -> AriResponse:
        self._live(name).state = "recording"
        return _NO_CONTENT

    def _r_live_mute(self, request: AriRequest, name: str) -> AriResponse:
        self._live(name)
        return _NO_CONTENT

    def _r_live_unmute(self, request: AriRequest, name: str) -> AriResponse:
        self._live(name)
        return _NO_CONTENT

    def _endpoint_json(self, technology: str, resource: str) -> dict[str, Any]:
        prefix = f"{technology}/{resource}-"
        return {
            "technology": technology,
            "resource": resource,
            "state": self.endpoints[(technology, resource)],
            "channel_ids": [c.id for c in self.channels.values() if c.name.startswith(prefix)],
        }

    def _r_endpoints(self, request: AriRequest) -> AriResponse:
        return _json([self._endpoint_json(t, r) for t, r in sorted(self.endpoints)])

    def _r_endpoints_of(self, request: AriRequest, tech: str) -> AriResponse:
        if tech not in TECHNOLOGIES:
            raise _Fail(404, f"No Endpoints found - invalid tech {tech}")
        return _json([self._endpoint_json(t, r) for t, r in sorted(self.endpoints) if t == tech])

    def _r_endpoint(self, request: AriRequest, tech: str, resource: str) -> AriResponse:
        if (tech, resource) not in self.endpoints:
            raise _Fail(404, "Endpoint not found")
        return _json(self._endpoint_json(tech, resource))


def _parse_caller_id(value: str) -> tuple[str, str]:
    """``"Alice" <+4930123>`` -> (name, number); a bare value is the number."""
    match = re.fullmatch(r'\s*"?([^"<]*?)"?\s*<([^>]*)>\s*', value)
    if match:
        return match.group(1).strip(), match.group(2).strip()
    return "", value.strip()


def _body_variables(request: AriRequest) -> dict[str, str]:
    """The ``{"variables": {...}}`` JSON body originate and externalMedia take."""
    body = request.json if isinstance(request.json, dict) else {}
    variables = body.get("variables")
    if not isinstance(variables, dict):
        return {}
    return {str(k): str(v) for k, v in variables.items()}
