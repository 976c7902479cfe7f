"""The ARI event stream over a scripted transport: no Asterisk, milliseconds per test.

Delivery, malformed events, reconnect with a new generation and a fresh reconcile,
waiting for Asterisk to register the app, refused credentials and stop().
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriConnectionError, AriUnauthorized
from voxtra.ari.events import AriEvent, StasisStart
from voxtra.ari.stream import AriEventStream, Connection
from voxtra.ari.transport import AriRequest, AriResponse, EventConnection

from .scripted import NOT_FOUND, ScriptedTransport, event_text, fixture, until

APP = "demo"
REGISTRATION = ("GET", f"/applications/{APP}")


@dataclass
class Recorder:
    events: list[AriEvent] = field(default_factory=list)
    connects: list[Connection] = field(default_factory=list)
    disconnects: list[Connection] = field(default_factory=list)

    def on_event(self, event: AriEvent) -> None:
        self.events.append(event)

    async def on_connect(self, connection: Connection) -> None:
        self.connects.append(connection)

    def on_disconnect(self, connection: Connection) -> None:
        self.disconnects.append(connection)


@dataclass
class Rig:
    transport: ScriptedTransport
    stream: AriEventStream
    recorder: Recorder
    task: asyncio.Task[None]


def make_stream(transport: ScriptedTransport, recorder: Recorder) -> AriEventStream:
    ari = AriClient("http://asterisk:8088", "u", "p", transport=transport)
    return AriEventStream(
        ari,
        APP,
        on_event=recorder.on_event,
        on_connect=recorder.on_connect,
        on_disconnect=recorder.on_disconnect,
        heartbeat=3.0,
        initial_backoff=0.001,  # milliseconds, so reconnect tests take milliseconds
        max_backoff=0.004,
        registration_timeout=5.0,
    )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    transport = ScriptedTransport({REGISTRATION: fixture("application")})
    recorder = Recorder()
    stream = make_stream(transport, recorder)
    task = asyncio.create_task(stream.run())
    yield Rig(transport, stream, recorder, task)
    await stream.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_events_are_delivered_and_malformed_ones_counted(rig: Rig) -> None:
    connection = await rig.stream.wait_connected(5)
    assert connection.generation == 1 and not connection.is_reconnect
    assert rig.transport.connect_calls == [([APP], False, 3.0)]
    events = rig.transport.connections[0]
    events.push(event_text("StasisStart", application=APP))
    events.push("{not json")
    events.push(b'{"no": "type"}')
    events.push(event_text("StasisEnd", application=APP).encode())  # binary is fine too
    await until(lambda: rig.stream.events_received + rig.stream.events_dropped == 4)
    assert [e.type for e in rig.recorder.events] == ["StasisStart", "StasisEnd"]
    assert isinstance(rig.recorder.events[0], StasisStart)
    assert (rig.stream.events_received, rig.stream.events_dropped) == (2, 2)


async def test_events_wants_declines_are_dropped_unparsed_and_counted() -> None:
    transport = ScriptedTransport({REGISTRATION: fixture("application")})
    recorder = Recorder()
    stream = make_stream(transport, recorder)
    asked: list[tuple[str, str]] = []

    def wants(kind: str, channel_id: str) -> bool:
        asked.append((kind, channel_id))
        return channel_id == "mine"

    stream.wants = wants
    task = asyncio.create_task(stream.run())
    try:
        await stream.wait_connected(5)
        events = transport.connections[0]
        events.push('{"type":"ChannelStateChange","channel":{"id":"mine","state":"Up"}}')
        events.push('{"type":"ChannelStateChange","channel":{"id":"other","state":"Up"}}')
        # not validated when declined: a bad shape nobody wants is not even logged
        events.push('{"type":"ChannelHangupRequest","channel":{"id":"other","state":[]}}')
        events.push('{"type":"Dial","peer":{"id":"other"},"dialstatus":"ANSWER"}')
        events.push('{"type":"StasisStart","channel":{"id":"other"}}')  # never peeked
        await until(lambda: stream.events_received == 5)
    finally:
        await stream.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    got = [(e.type, e.channel_id) for e in recorder.events]
    assert got == [("ChannelStateChange", "mine"), ("StasisStart", "other")]
    assert stream.events_skipped == 3 and stream.events_dropped == 0
    assert asked == [
        ("ChannelStateChange", "mine"),
        ("ChannelStateChange", "other"),
        ("ChannelHangupRequest", "other"),
        ("Dial", "other"),
    ]


async def test_a_closed_connection_reconnects_as_generation_2_and_reconciles_again(
    rig: Rig,
) -> None:
    await rig.stream.wait_connected(5)
    await until(lambda: len(rig.recorder.connects) == 1)
    rig.transport.connections[0].hang_up()  # Asterisk went away
    await until(lambda: len(rig.recorder.connects) == 2)
    first, second = rig.recorder.connects
    assert (first.generation, second.generation) == (1, 2)
    assert second.is_reconnect and rig.stream.generation == 2
    assert rig.recorder.disconnects == [first]
    assert len(rig.transport.connections) == 2
    rig.transport.connections[1].push(event_text("StasisStart", application=APP))
    await until(lambda: len(rig.recorder.events) == 1)  # events flow on the new one


async def test_a_failing_connection_and_an_unreachable_asterisk_are_retried(rig: Rig) -> None:
    await rig.stream.wait_connected(5)
    unreachable = AriConnectionError(0, "GET", "/ari/events", "ConnectionRefusedError")
    refused_upgrade = AriConnectionError(503, "GET", "/ari/events", "upgrade refused")
    rig.transport.connect_outcomes = [unreachable, refused_upgrade]
    rig.transport.connections[0].fail(AriConnectionError(0, "GET", "/ari/events", "reset"))
    await until(lambda: len(rig.recorder.connects) == 2)
    assert len(rig.transport.connect_calls) == 4  # 1 + 2 failed + the one that worked
    assert rig.stream.generation == 2  # failed attempts are no generation


async def test_reconnect_drops_the_connection_and_connects_again(rig: Rig) -> None:
    await rig.stream.wait_connected(5)
    await rig.stream.reconnect()  # how an app taken over (ApplicationReplaced) returns
    assert rig.transport.connections[0].closed_by_client
    await until(lambda: rig.stream.generation == 2 and rig.stream.connected.is_set())


async def test_connected_waits_until_asterisk_registered_the_app() -> None:
    transport = ScriptedTransport()
    recorder = Recorder()
    stream = make_stream(transport, recorder)
    seen_connected: list[bool] = []
    answers = [NOT_FOUND, NOT_FOUND, fixture("application")]

    def registration(_request: AriRequest) -> AriResponse:
        seen_connected.append(stream.connected.is_set())
        return answers.pop(0) if len(answers) > 1 else answers[0]

    transport.answers[REGISTRATION] = registration
    task = asyncio.create_task(stream.run())
    try:
        await stream.wait_connected(5)
        assert seen_connected == [False, False, False]  # 404, 404, then 200: connected
        await until(lambda: len(recorder.connects) == 1)  # on_connect after registration
    finally:
        await stream.stop()
        await asyncio.wait_for(task, 5)


async def test_refused_credentials_end_run_with_ari_unauthorized() -> None:
    transport = ScriptedTransport()
    transport.connect_outcomes = [
        AriUnauthorized(401, "GET", "/ari/events", "ARI user or password refused")
    ]
    stream = make_stream(transport, Recorder())
    with pytest.raises(AriUnauthorized) as caught:
        await asyncio.wait_for(stream.run(), 5)
    assert caught.value.status == 401
    assert len(transport.connect_calls) == 1  # not retried
    assert not stream.connected.is_set() and stream.generation == 0


async def test_stop_ends_run(rig: Rig) -> None:
    await rig.stream.wait_connected(5)
    await rig.stream.stop()
    await asyncio.wait_for(rig.task, 5)
    assert rig.task.result() is None
    assert rig.transport.connections[0].closed_by_client
    assert not rig.stream.connected.is_set()
    assert len(rig.transport.connect_calls) == 1  # no reconnect after stop


class SlowHandshake(ScriptedTransport):
    """Its handshake waits until ``done`` is set (``begun`` says it started)."""

    def __init__(self) -> None:
        super().__init__({REGISTRATION: fixture("application")})
        self.begun = asyncio.Event()
        self.done = asyncio.Event()

    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        self.begun.set()
        await self.done.wait()
        return await super().connect_events(apps, subscribe_all=subscribe_all, heartbeat=heartbeat)


async def test_stop_during_the_handshake_ends_run_and_closes_that_connection() -> None:
    # Reproduced: stop() had no connection to close yet, and run() read on from the one
    # the handshake then gave it.
    transport = SlowHandshake()
    recorder = Recorder()
    stream = make_stream(transport, recorder)
    task = asyncio.create_task(stream.run())
    await asyncio.wait_for(transport.begun.wait(), 5)
    await stream.stop()
    transport.done.set()
    await asyncio.wait_for(task, 2)
    assert transport.connections[0].closed_by_client
    assert stream.generation == 0 and recorder.connects == []


async def test_a_handler_error_does_not_stop_the_stream(rig: Rig) -> None:
    await rig.stream.wait_connected(5)
    calls: list[str] = []
    original: Callable[[AriEvent], None] = rig.stream.on_event

    def flaky(event: AriEvent) -> None:
        calls.append(event.type)
        if len(calls) == 1:
            raise RuntimeError("user code broke")
        original(event)

    rig.stream.on_event = flaky
    events = rig.transport.connections[0]
    events.push(event_text("StasisStart", application=APP))
    events.push(event_text("StasisEnd", application=APP))
    await until(lambda: len(calls) == 2)
    assert [e.type for e in rig.recorder.events] == ["StasisEnd"]
    assert rig.stream.generation == 1


class ProbingTransport(ScriptedTransport):
    """Answers the registration probe (``POST /events/user/...``) per connection:
    ``probe[n]`` says what connection ``n`` (0-based) does with it: "echo" (204 and the
    event comes back on that socket), "silent" (204, nothing comes back: the app is
    listed but inactive), "absent" (404; ``GET /applications`` 404 too) or an HTTP
    status to refuse with. The last entry repeats."""

    def __init__(self, probe: list[str | int]) -> None:
        super().__init__()
        self.probe = probe
        self.probes: list[tuple[int, str]] = []

    def _mode(self) -> str | int:
        index = len(self.connections) - 1
        return self.probe[min(index, len(self.probe) - 1)]

    async def handle_request(self, request: AriRequest) -> AriResponse:
        mode = self._mode()
        if request.method == "GET" and request.path == f"/applications/{APP}":
            self.requests.append(request)
            return NOT_FOUND if mode == "absent" else fixture("application")
        if request.method == "POST" and request.path.startswith("/events/user/"):
            self.requests.append(request)
            name = request.path.rsplit("/", 1)[1]
            self.probes.append((len(self.connections), name))
            assert request.params["application"] == APP
            if mode == "absent":
                return NOT_FOUND
            if isinstance(mode, int):
                return AriResponse(mode, b'{"message": "refused"}', "Refused")
            if mode == "echo":
                self.connections[-1].push(
                    event_text("ChannelUserevent", application=APP, eventname=name)
                )
            return AriResponse(204, b"", "No Content")
        return await super().handle_request(request)


def probing_stream(transport: ProbingTransport, recorder: Recorder) -> AriEventStream:
    stream = make_stream(transport, recorder)
    stream.registration_timeout = 0.3  # a lost registration is noticed in 0.3 s here
    stream.probe_timeout = 0.1
    return stream


async def _run_until_connected(
    transport: ProbingTransport, recorder: Recorder
) -> tuple[AriEventStream, Connection]:
    stream = probing_stream(transport, recorder)
    task = asyncio.create_task(stream.run())
    try:
        connection = await stream.wait_connected(5)
        await until(lambda: len(recorder.connects) == 1)
    finally:
        await stream.stop()
        await asyncio.wait_for(task, 5)
    return stream, connection


@pytest.mark.parametrize("lost", ["silent", "absent"])
async def test_a_registration_asterisk_lost_is_noticed_and_made_again(lost: str) -> None:
    # Reproduced on Asterisk 22.10 (docs/performance.md): the same app name connected
    # right after an earlier connection for it closed can lose its registration while
    # the old session is torn down; the app is then listed (the old object, "silent")
    # or gone ("absent"), and no StasisStart reaches the new socket. Listing alone
    # ("connected" before) left such an app deaf until the socket dropped.
    transport = ProbingTransport([lost, "echo"])
    recorder = Recorder()
    stream, connection = await _run_until_connected(transport, recorder)
    assert connection.generation == 2
    assert transport.connections[0].closed_by_client  # closed by the stream, not Asterisk
    assert stream.registrations_lost == 1
    assert [c.generation for c in recorder.connects] == [2]  # reconciled once, on the live one
    assert recorder.events == []  # the probe's echo is the stream's own


async def test_a_registration_is_confirmed_by_its_echo_and_the_echo_kept_from_the_app() -> None:
    transport = ProbingTransport(["echo"])
    recorder = Recorder()
    stream = probing_stream(transport, recorder)
    task = asyncio.create_task(stream.run())
    try:
        connection = await stream.wait_connected(5)
        assert connection.generation == 1 and stream.registrations_lost == 0
        assert len(transport.probes) == 1  # one round trip
        # A user event of the app's own (not a pending probe) is delivered as any other.
        transport.connections[0].push(
            event_text("ChannelUserevent", application=APP, eventname="mine")
        )
        await until(lambda: stream.events_received == 2)
        assert [(e.type, getattr(e, "eventname", "")) for e in recorder.events] == [
            ("ChannelUserevent", "mine")
        ]
    finally:
        await stream.stop()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("refusal", [403, 400])
async def test_a_server_refusing_the_probe_falls_back_to_the_listing(refusal: int) -> None:
    # A read-only ARI user may not send user events: the listing decides, as before.
    transport = ProbingTransport([refusal])
    stream, connection = await _run_until_connected(transport, Recorder())
    assert connection.generation == 1 and stream.registrations_lost == 0


async def test_a_late_probe_echo_is_not_passed_to_the_app() -> None:
    transport = ProbingTransport(["echo"])
    recorder = Recorder()
    stream = probing_stream(transport, recorder)
    task = asyncio.create_task(stream.run())
    try:
        await stream.wait_connected(5)
        late = event_text(
            "ChannelUserevent", application=APP, eventname="voxtra-registration-0123456789abcdef"
        )
        transport.connections[0].push(late)  # its probe gave up long ago
        await until(lambda: stream.events_received == 2)
        assert recorder.events == []
    finally:
        await stream.stop()
        await asyncio.wait_for(task, 5)
