"""Faults injected under live calls, through a real Asterisk: shared by tests and bench.

Each scenario starts a real :class:`~voxtra.app.VoxtraApp`, places real calls (Local
channels: cheap, no SIP stack), injects one fault and returns a report of what it
saw. ``tests/integration/faults`` asserts on the reports; ``bench/faults.py`` prints
them with targets.

* :func:`asterisk_kill`: SIGKILL Asterisk while calls carry media and record, start it
  again, and count what is left over (tasks, sockets, sessions, channels, bridges).
* :func:`storage_outage`: object storage is down for the whole of N recorded calls,
  then comes back; count deliveries per recording.

Both need the sandbox (:class:`~voxtra.testing.asterisk.AsteriskSandbox`); the kill
needs one nobody else uses (see :func:`others_on`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
import wave
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriError
from voxtra.calls.session import CallSession
from voxtra.calls.state import INTERNAL_PREFIX
from voxtra.errors import CallEnded
from voxtra.media.transport import MediaTransport
from voxtra.recording.delivery import Backoff
from voxtra.recording.metadata import RecordingMetadata
from voxtra.testing.asterisk import AsteriskSandbox, SandboxUnavailable

__all__ = [
    "KillReport",
    "OutageReport",
    "StallMeter",
    "asterisk_kill",
    "others_on",
    "place_call",
    "socket_counts",
    "storage_outage",
]

#: A prompt of about 60 s: the far end keeps sending audio for as long as any scenario
#: needs (it is hung up, or killed, long before it ends).
LONG_PROMPT = "&".join(["demo-congrats"] * 6)


# -- measuring ---------------------------------------------------------------------------


def socket_counts() -> dict[str, int]:
    """This process's open sockets by kind, from ``/proc`` (Linux).

    ``udp`` are RTP transports; ``tcp_ari`` connections to Asterisk's HTTP port (the
    REST client's keep-alive pool and the events WebSocket); ``tcp_other`` anything
    else over TCP (AudioSocket, storage clients); ``tcp_listen`` listeners (the app's
    AudioSocket server, open while the app runs); ``tcp_closing`` TCP sockets whose
    peer is gone (CLOSE_WAIT and the like: held by nobody who noticed); ``other`` Unix
    sockets and pairs.
    """
    inodes: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    counts = {
        "udp": 0,
        "tcp_ari": 0,
        "tcp_other": 0,
        "tcp_listen": 0,
        "tcp_closing": 0,
        "other": 0,
    }
    for table in ("udp", "udp6", "tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/self/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                inode = int(fields[9])
                if inode not in inodes:
                    continue
                inodes.discard(inode)
                if table.startswith("udp"):
                    counts["udp"] += 1
                elif fields[3] == "0A":  # LISTEN
                    counts["tcp_listen"] += 1
                elif fields[3] != "01":  # not ESTABLISHED
                    counts["tcp_closing"] += 1
                elif fields[2].endswith(":1F98"):  # remote port 8088
                    counts["tcp_ari"] += 1
                else:
                    counts["tcp_other"] += 1
    counts["other"] = len(inodes)
    return counts


class StallMeter:
    """The event loop's longest stall while it runs: a task that sleeps 5 ms at a time
    and records how much later than asked it woke up."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def max_ms(self) -> float:
        return self.max_s * 1000

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.period)
            self.max_s = max(self.max_s, loop.time() - asked - self.period)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="voxtra-faults-stall-meter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def others_on(ari: AriClient, mine: str) -> list[str]:
    """Stasis apps other than ``mine`` registered on this Asterisk (someone else's calls)."""
    return sorted(app.name for app in await ari.applications.list() if app.name != mine)


async def place_call(
    ari: AriClient, app_name: str, *, playfile: str = LONG_PROMPT, extension: str = "1000"
) -> tuple[str, str]:
    """A Local call into ``app_name``; its far half plays ``playfile``. (call id, far leg)."""
    tag = uuid.uuid4().hex[:10]
    call_id, caller_leg = f"call-{tag}", f"caller-{tag}"
    await ari.channels.originate(
        "Local/play@voxtra-test",
        app=app_name,
        app_args=extension,
        channel_id=call_id,
        other_channel_id=caller_leg,
        caller_id="Fault <5550100>",
        timeout=10,
        variables={"PLAYFILE": playfile},
        formats="slin",
    )
    return call_id, caller_leg


async def _until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def _ours_in_asterisk(ari: AriClient, call_ids: set[str]) -> tuple[list[str], list[str]]:
    """Channels and bridges in Asterisk that belong to these calls or to any Voxtra app."""
    channels = [
        c.id
        for c in await ari.channels.list()
        if c.id.startswith(INTERNAL_PREFIX) or c.id in call_ids
    ]
    bridges = [b.id for b in await ari.bridges.list() if b.id.startswith(INTERNAL_PREFIX)]
    return channels, bridges


def _readable(meta: RecordingMetadata) -> str:
    """How a user's tools see a delivered local file: ``<seconds> s`` or ``unreadable``."""
    location = meta.location if isinstance(meta.location, str) else ""
    if not location.startswith("file://"):
        return f"to {location}"
    try:
        with wave.open(unquote(urlparse(location).path), "rb") as w:
            return f"{w.getnframes() / w.getframerate():.1f} s"
    except (OSError, wave.Error, EOFError) as exc:
        return f"unreadable ({exc})"


# -- Asterisk killed under live calls ----------------------------------------------------


@dataclass
class KillReport:
    """What :func:`asterisk_kill` saw. Times are seconds."""

    calls: int
    attached: int = 0
    """Calls with media flowing and a recording running when Asterisk was killed."""
    frames_in_before: int = 0
    frames_lost_before: int = 0
    """RTP frames lost by our side while all calls ran, before the kill."""
    down_s: float = 0.0
    """SIGKILL to Asterisk answering ARI again (the sandbox's restart)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """How each handler ended: ``CallEnded``, ``cancelled``, or an exception's repr."""
    hangup_callbacks: Counter[str] = field(default_factory=Counter)
    sessions_left: int = 0
    ended_after_back_s: float | None = None
    """Asterisk back to every old session ended (the app reconnected and reconciled)."""
    new_call_after_back_s: float | None = None
    """Asterisk back to a new call's first audio frame in the app (and one echoed back)."""
    new_call_frames_lost: int = 0
    new_call_attempts: int = 0
    """Calls placed (one every 250 ms from Asterisk back) until the first that worked."""
    new_call_error: str = ""
    tasks_before: int = 0
    tasks_leaked: list[str] = field(default_factory=list)
    sockets_before: dict[str, int] = field(default_factory=dict)
    sockets_after: dict[str, int] = field(default_factory=dict)
    channels_left: list[str] = field(default_factory=list)
    bridges_left: list[str] = field(default_factory=list)
    recordings: dict[str, str] = field(default_factory=dict)
    """Each recording running at the kill: ``delivered <s> s`` (as a WAV reader sees the
    delivered file, or ``delivered unreadable (...)``), ``spooled: <error>``, ``in
    asterisk`` (stored there, not delivered) or ``lost``."""
    delivered_twice: list[str] = field(default_factory=list)
    stall_ms: float = 0.0
    """The event loop's longest stall from the calls' start to the end of the recovery."""
    notes: list[str] = field(default_factory=list)


async def asterisk_kill(
    sandbox: AsteriskSandbox,
    *,
    calls: int = 20,
    workdir: str,
    settle: float = 2.5,
    down_for: float = 0.0,
    allow_shared: bool = False,
    ended_timeout: float = 20.0,
    new_call_timeout: float = 15.0,
    **app_options: Any,
) -> KillReport:
    """SIGKILL Asterisk during ``calls`` echo calls that record, restart it, and look.

    Each handler answers, starts a recording, echoes ``audio_stream()`` back and, when
    the stream ends, plays a goodbye (which must raise CallEnded: the call is gone).
    Asterisk is started again at once, or after ``down_for`` seconds. Raises
    SandboxUnavailable, before anything is killed, when other Stasis apps are
    registered on that Asterisk (someone else's calls), unless ``allow_shared``.
    """
    report = KillReport(calls=calls)
    app_name = f"voxtra-kill-{uuid.uuid4().hex[:8]}"
    transports: dict[str, MediaTransport] = {}
    recording_of: dict[str, str] = {}
    first_frame: dict[str, float] = {}
    echoed: dict[str, float] = {}
    delivered: Counter[str] = Counter()
    delivered_meta: dict[str, RecordingMetadata] = {}

    app = VoxtraApp(
        sandbox.ari_url,
        sandbox.username,
        sandbox.password,
        app_name,
        environ={},
        recordings_dir=os.path.join(workdir, "recordings"),
        spool_dir=os.path.join(workdir, "spool"),
        **app_options,
    )

    @app.on_recording_delivered
    def _delivered(meta: RecordingMetadata) -> None:
        delivered[meta.name] += 1
        delivered_meta[meta.name] = meta

    @app.default
    async def echo(call: CallSession) -> None:
        outcome = "returned"

        async def hung_up(session: CallSession) -> None:
            report.hangup_callbacks[session.id] += 1

        call.on_hangup(hung_up)
        try:
            await call.answer()
            recording_of[call.id] = await call.record_start()
            transports[call.id] = await call.media()
            async for chunk in call.audio_stream():
                if call.id not in first_frame:
                    first_frame[call.id] = time.monotonic()
                await call.send_audio(chunk)
                if call.id not in echoed and transports[call.id].stats.frames_out > 0:
                    echoed[call.id] = time.monotonic()
            await call.play_file("vm-goodbye")  # the stream ended: the call must be over
        except CallEnded:
            outcome = "CallEnded"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome = repr(exc)
        finally:
            report.outcomes[outcome] += 1

    ari = AriClient(sandbox.ari_url, sandbox.username, sandbox.password)
    stall = StallMeter()
    await app.start()
    try:
        busy = await others_on(ari, app_name)
        if busy and not allow_shared:
            raise SandboxUnavailable(
                f"refusing to kill an Asterisk other apps use ({', '.join(busy)}): "
                "run the fault tests against an Asterisk of their own"
            )
        loop_tasks = asyncio.all_tasks()
        report.tasks_before = len(loop_tasks)
        report.sockets_before = socket_counts()
        stall.start()
        placed = await asyncio.gather(*(place_call(ari, app_name) for _ in range(calls)))
        call_ids = {call_id for call_id, _ in placed}
        ready = await _until(
            lambda: sum(1 for c in call_ids if c in first_frame and c in recording_of) >= calls,
            30,
        )
        if not ready:
            report.notes.append(
                f"only {len(first_frame)} of {calls} calls had audio before the kill"
            )
        await asyncio.sleep(settle)  # audio and recordings running for a while
        report.attached = sum(1 for c in call_ids if c in first_frame and c in recording_of)
        report.frames_in_before = sum(t.stats.frames_in for t in transports.values())
        report.frames_lost_before = sum(t.stats.lost for t in transports.values())
        old_sessions = [app.active_sessions[c] for c in call_ids if c in app.active_sessions]

        pid = sandbox.pid()
        if pid is None:
            raise SandboxUnavailable("the sandbox Asterisk is not running")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(down_for)
        # The sandbox's own start (blocking) in a thread: the app's loop must notice and
        # recover by itself meanwhile.
        await asyncio.to_thread(sandbox.up)
        back = time.monotonic()
        report.down_s = back - killed_at

        async def new_call() -> None:
            # A caller tries every 250 ms, as people redial: a call placed before the
            # app has registered again is refused by Asterisk, and waiting for each
            # attempt to fail would measure the harness, not the app.
            attempts: list[str] = []
            while not any(c in echoed for c in attempts):
                with contextlib.suppress(AriError):  # Asterisk not taking calls yet
                    new_id, _ = await place_call(ari, app_name, extension="2000")
                    attempts.append(new_id)
                    call_ids.add(new_id)
                await _until(lambda: any(c in echoed for c in attempts), 0.25)
            first = min((c for c in attempts if c in echoed), key=lambda c: echoed[c])
            report.new_call_after_back_s = echoed[first] - back
            report.new_call_attempts = attempts.index(first) + 1
            await asyncio.sleep(0.5)  # some audio both ways, to count losses on
            report.new_call_frames_lost = transports[first].stats.lost

        async def old_ones_end() -> None:
            if await _until(lambda: all(s.ended for s in old_sessions), ended_timeout):
                report.ended_after_back_s = time.monotonic() - back

        try:
            await asyncio.wait_for(asyncio.gather(new_call(), old_ones_end()), new_call_timeout)
        except TimeoutError:
            report.new_call_error = f"no echoed frame within {new_call_timeout} s"
        # Hang the new call(s) up; then every session, task and socket must be gone.
        for call_id in list(call_ids):
            with contextlib.suppress(AriError):
                await ari.channels.hangup(call_id)
        await _until(lambda: not app.active_sessions, ended_timeout)
        report.sessions_left = len(app.active_sessions)
        # Recordings of the killed calls: delivered, spooled, still in Asterisk, or lost.
        names = {recording_of[c]: c for c in recording_of if c in {s.id for s in old_sessions}}
        assert app.recordings is not None
        await app.recordings.drain(10)
        await _until(lambda: all(n in delivered for n in names), 5)
        spooled = {e.metadata.name: e for e in await app.recordings.spooled()}
        stored = {r.name for r in await ari.recordings.list_stored()}
        for name in names:
            if name in delivered:
                report.recordings[name] = "delivered " + _readable(delivered_meta[name])
            elif name in spooled:
                report.recordings[name] = f"spooled: {spooled[name].last_error}"
            elif name in stored:
                report.recordings[name] = "in asterisk"
            else:
                report.recordings[name] = "lost"
        report.delivered_twice = sorted(n for n, count in delivered.items() if count > 1)
        await stall.stop()
        report.stall_ms = stall.max_ms
        await asyncio.sleep(0.2)  # let done-callbacks run
        report.tasks_leaked = sorted(
            t.get_name() for t in asyncio.all_tasks() - loop_tasks if not t.done()
        )
        report.sockets_after = socket_counts()
        report.channels_left, report.bridges_left = await _ours_in_asterisk(ari, call_ids)
    finally:
        await stall.stop()
        await app.stop(deadline=2)
        await ari.close()
    return report


# -- storage down for the whole of the calls ----------------------------------------------


@dataclass
class OutageReport:
    """What :func:`storage_outage` saw."""

    calls: int
    recorded: int = 0
    """Recordings the handlers stopped and Voxtra spooled while storage was down."""
    delivered: int = 0
    delivered_twice: list[str] = field(default_factory=list)
    in_bucket: int = 0
    """Objects found in the bucket afterwards, with the right size and SHA-256."""
    failed_attempts: int = 0
    """Upload attempts that failed while storage was down (all recordings together)."""
    back_to_delivered_s: float | None = None
    """Storage back to the last recording delivered."""
    errors: list[str] = field(default_factory=list)
    still_spooled: int = 0
    exhausted: int = 0
    past_fast_retries: int = 0
    """Recordings whose fast retries ran out while storage was down (``on_failed``);
    the app kept retrying them on the slow backoff, without a restart."""
    stall_ms: float = 0.0
    """The event loop's longest stall from the calls' start to the last delivery."""


async def storage_outage(
    sandbox: AsteriskSandbox,
    server: Any,
    sink: Any,
    *,
    calls: int = 20,
    workdir: str,
    seconds: float = 1.5,
    deliver_timeout: float = 60.0,
    retries: int | None = None,
    backoff: Backoff | None = None,
    slow_backoff: Backoff | None = None,
    outlast_retries: bool = False,
    check_object: Callable[[str, RecordingMetadata], Awaitable[bool]] | None = None,
    **app_options: Any,
) -> OutageReport:
    """Record ``calls`` concurrent calls while ``server`` (a storage server with
    ``stop()``/``start()``) is down; start it again and count the deliveries.

    ``sink`` is the app's recording sink (pointing at ``server``); ``check_object``,
    if given, confirms each delivered object is really in storage. ``retries`` replaces
    the delivery's retry budget (an outage longer than the budget, without waiting).
    """
    report = OutageReport(calls=calls)
    app_name = f"voxtra-outage-{uuid.uuid4().hex[:8]}"
    delivered: Counter[str] = Counter()
    metas: dict[str, RecordingMetadata] = {}
    names: list[str] = []
    last_delivery = [0.0]

    app = VoxtraApp(
        sandbox.ari_url,
        sandbox.username,
        sandbox.password,
        app_name,
        environ={},
        recordings_dir=os.path.join(workdir, "recordings"),
        spool_dir=os.path.join(workdir, "spool"),
        recording_sink=sink,
        **app_options,
    )

    @app.on_recording_delivered
    def _delivered(meta: RecordingMetadata) -> None:
        delivered[meta.name] += 1
        metas[meta.name] = meta
        last_delivery[0] = time.monotonic()

    failed: list[int] = [0]

    @app.default
    async def record(call: CallSession) -> None:
        await call.answer()
        name = await call.record_start()
        await asyncio.sleep(seconds)
        try:
            stopped = await call.record_stop()
        except Exception as exc:
            report.errors.append(f"record_stop: {exc!r}")
            return
        if stopped is not None:
            names.append(stopped)
        else:
            report.errors.append(f"{name}: record_stop found nothing to stop")

    ari = AriClient(sandbox.ari_url, sandbox.username, sandbox.password)
    await app.start()
    assert app.recordings is not None
    recordings = app.recordings
    if retries is not None:
        recordings.default.retries = retries
    if backoff is not None:
        recordings.default.backoff = backoff
    if slow_backoff is not None:
        recordings.default.slow_backoff = slow_backoff
    past_fast: set[str] = set()

    def _past_fast_retries(meta: RecordingMetadata, _error: BaseException) -> None:
        past_fast.add(meta.name)

    recordings.on_failed = _past_fast_retries
    original_deliver = sink.deliver

    async def counting_deliver(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original_deliver(*args, **kwargs)
        except BaseException:
            failed[0] += 1
            raise

    sink.deliver = counting_deliver
    # The harness shares the loop: its first requests (and model parsing) are not the
    # app's stall.
    await ari.asterisk.info()
    await ari.channels.list()
    stall = StallMeter()
    stall.start()
    try:
        await asyncio.to_thread(server.stop)
        try:
            placed = await asyncio.gather(
                *(place_call(ari, app_name, playfile=LONG_PROMPT) for _ in range(calls))
            )
            await _until(lambda: len(names) + len(report.errors) >= calls, 30 + seconds)
            report.recorded = len(names)
            for _, leg in placed:
                with contextlib.suppress(AriError):
                    await ari.channels.hangup(leg)
            await asyncio.sleep(0.5)  # at least one attempt each has failed by now
            if outlast_retries:
                await _until(lambda: past_fast >= set(names), 60)
        finally:
            await asyncio.to_thread(server.start)
        back = time.monotonic()
        await _until(lambda: all(n in delivered for n in names), deliver_timeout, step=0.1)
        if names and all(n in delivered for n in names):
            report.back_to_delivered_s = last_delivery[0] - back
        await recordings.drain(5)
        await asyncio.sleep(1.0)  # a second delivery, if any, would show by now
        report.stall_ms = stall.max_ms
        report.delivered = sum(1 for n in names if n in delivered)
        report.delivered_twice = sorted(n for n, count in delivered.items() if count > 1)
        report.failed_attempts = failed[0]
        report.past_fast_retries = len(past_fast & set(names))
        entries = await recordings.spooled()
        report.still_spooled = len(entries)
        report.exhausted = sum(1 for e in entries if e.exhausted)
        if check_object is not None:
            for name in names:
                if name in metas and await check_object(name, metas[name]):
                    report.in_bucket += 1
    finally:
        await stall.stop()
        sink.deliver = original_deliver
        await app.stop(deadline=2)
        await ari.close()
    return report
