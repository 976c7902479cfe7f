"""VoxtraApp: connects to Asterisk, turns each new Stasis channel into a CallSession.

Structure: one long-lived task runs the ARI event stream; each call runs in a task of
its own, inside which its :class:`~voxtra.calls.context.CallContext` holds a task group
for everything the call starts. The stream hands every event to
:meth:`VoxtraApp._on_event`, which only updates state and routes the event through the
:class:`~voxtra.calls.registry.CallRegistry` to the calls it concerns (synchronously, no
user code inline), so a slow or stuck handler never delays another call's events.

The app is the top of the call layers: it implements
:class:`~voxtra.calls.host.CallHost` (what a call needs from it), and nothing below
imports it.

Channels the app creates for itself (media, snoop, transfer legs) get ids starting with
``voxtra-internal-`` and are never routed as calls.

Reconnect policy: after every ARI reconnect the app lists channels. Sessions whose
channel is gone end (their hangup callbacks fire once). Channels in the app that no
session owns are handled by ``reconcile_policy``: ``hangup`` (default) hangs them up,
``adopt`` routes them as new calls; if nothing has claimed them ``reconcile_grace``
seconds later (a StasisStart may be on its way).

One app name, several processes: every channel this app takes or creates carries its
``instance_id`` (the ``VOXTRA_INSTANCE`` channel variable on calls, the id itself on
``voxtra-internal-`` channels and bridges), and reconcile touches nothing else, so a
second process started with the same Stasis app name leaves the first one's calls
alone. The default id is stable across restarts (:mod:`voxtra.instance`), so a process
restarted after a crash reclaims the calls its predecessor left parked. Asterisk
gives the app to the newest WebSocket; the one it was taken from gets
``ApplicationReplaced``, logs it at ERROR level and takes the app back as soon as the
other has left (checked every ``takeover_poll`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from voxtra import eventloop
from voxtra._callbacks import check_callback
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriConnectionError, AriError, AriNotFound, AriServerError
from voxtra.ari.events import (
    ApplicationReplaced,
    AriEvent,
    ChannelDestroyed,
    ChannelHangupRequest,
    ChannelStateChange,
    Dial,
    StasisStart,
)
from voxtra.ari.models import Channel, Endpoint
from voxtra.ari.stream import AriEventStream, Connection
from voxtra.ari.transport import AriTransport
from voxtra.calls.amd import AmdConfig, AmdVerdict
from voxtra.calls.amd import detect as detect_amd
from voxtra.calls.assist import AgentAssist, foreign_parties, other_party
from voxtra.calls.context import CallContext
from voxtra.calls.outcomes import originate_error
from voxtra.calls.parties import SUPERVISOR_KEYS, CallParties, Supervision, SupervisorMode
from voxtra.calls.registry import CallRegistry, PendingOriginate
from voxtra.calls.session import CallSession
from voxtra.calls.state import (
    INTERNAL_PREFIX,
    CallDirection,
    CallEndReason,
    CallState,
    internal_id,
)
from voxtra.calls.voice import VoiceConfig
from voxtra.config import VoxtraSettings, load_settings
from voxtra.errors import (
    AppNotRunning,
    CallEnded,
    CallFailed,
    CallNoAnswer,
    ConfigError,
    VoxtraError,
)
from voxtra.instance import InstanceSlot
from voxtra.logs import CALL_ID, use_json_logs
from voxtra.media.audiosocket_transport import AudioSocketServer
from voxtra.media.collector import settle_collector
from voxtra.media.engine_transport import EngineHub
from voxtra.media.pacer import Ticker
from voxtra.providers.base import LLM, STT, TTS, VAD
from voxtra.providers.http import HttpScope, context_with, current_scope
from voxtra.recording.app_recordings import AppRecordings
from voxtra.recording.delivery import DeliveredHook
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.sinks import LocalFileSink, RecordingSink
from voxtra.routing import CallHandler, CallInfo, Route, Router, RoutingError

__all__ = ["VoxtraApp"]

logger = logging.getLogger(__name__)

H = TypeVar("H", bound=CallHandler)
T = TypeVar("T")
Hook = Callable[[], Awaitable[None]]
CallHook = Callable[[CallSession], Awaitable[None]]

IGNORED_EVENTS = ("ChannelVarset", "ChannelDialplan")
"""The event kinds an app asks Asterisk not to send by default (``ignored_events``)."""

INSTANCE_VARIABLE = "VOXTRA_INSTANCE"
"""Channel variable naming the app instance that took or created a call."""
INSTANCE_GLOBAL_PREFIX = "VOXTRA_INSTANCE_"
"""With ``instance_tag_in_dialplan``: the global variable ``VOXTRA_INSTANCE_<app name>``
holds the instance serving the app, for the dialplan to copy onto each call."""
_INSTANCE_ID = re.compile(r"[A-Za-z0-9_.]{1,32}")

RECONCILE_RETRY = 0.25
"""Seconds before reconcile asks again for a listing that failed; doubled each time, up
to ``RECONCILE_RETRY_MAX``, for as long as the events connection lasts."""
RECONCILE_RETRY_MAX = 5.0
STOP_CONCURRENCY = 20
"""Requests ``stop()`` has in flight at once (hang-ups, destroys): below the REST pool's
32 connections (``REST_POOL_LIMIT``), so the teardowns running beside them still get one."""
AMD_STATUS_VARIABLE = "AMDSTATUS"
"""Set by ``AMD()`` in the AMD dialplan step: a call back from the step has it."""


class VoxtraApp:
    """A Voxtra application: routes calls in one Stasis app to your handlers.

    Settings come from arguments, else ``VOXTRA_*`` environment variables, else a YAML
    ``config_file``, else defaults (see :mod:`voxtra.config`).
    """

    def __init__(
        self,
        ari_url: str | None = None,
        username: str | None = None,
        password: str | SecretStr | None = None,
        app_name: str | None = None,
        *,
        config_file: str | Path | None = None,
        settings: VoxtraSettings | None = None,
        environ: Mapping[str, str] | None = None,
        stt: STT | None = None,
        llm: LLM | None = None,
        tts: TTS | None = None,
        vad: VAD | None = None,
        voice: VoiceConfig | None = None,
        recording_sink: RecordingSink | None = None,
        instance_id: str | None = None,
        transport: AriTransport | None = None,
        **options: Any,
    ) -> None:
        overrides = {
            k: v
            for k, v in {
                "ari_url": ari_url,
                "username": username,
                "password": password,
                "app_name": app_name,
                **options,
            }.items()
            if v is not None
        }
        if settings is None:
            settings = load_settings(config_file=config_file, environ=environ, **overrides)
        elif overrides:
            # Validated (model_copy would not: a plain password str must become SecretStr).
            settings = VoxtraSettings(**{**dict(settings), **overrides})
        self.settings = settings
        self.app_name = settings.app_name
        voice = voice or VoiceConfig()
        self.voice: VoiceConfig = replace(
            voice,
            stt=stt or voice.stt,
            llm=llm or voice.llm,
            tts=tts or voice.tts,
            vad=vad or voice.vad,
            # the settings' default; a VoiceConfig that sets its own keeps it
            silence_timeout=(
                settings.silence_timeout if voice.silence_timeout is None else voice.silence_timeout
            ),
        )
        """Default speech providers and options for every call (see :mod:`voxtra.calls.voice`)."""
        self.recording_sink = recording_sink
        self.recordings: AppRecordings | None = None
        """Recording delivery (spool + sinks), created by :meth:`start`."""
        self.ari = AriClient(
            settings.ari_url, settings.username, settings.password, transport=transport
        )
        """The ARI client; ``transport`` (e.g. :class:`voxtra.testing.FakeAsterisk`)
        replaces the HTTP/WebSocket connection to Asterisk (see :meth:`use_transport`)."""
        self.router = Router()
        self.registry: CallRegistry[CallContext] = CallRegistry()
        """Which call owns which channel, bridge and originate (event routing)."""
        self.active_sessions: dict[str, CallSession] = {}
        self._assists: set[AgentAssist] = set()
        """Live agent assists (closed at stop: some are on channels no call owns)."""
        self._http: HttpScope | None = None
        """The HTTP providers' shared clients, from start() to stop()."""
        self.calls_handled = 0
        self.hangup_grace = 2.0
        """Seconds a handler may keep running after its call ended, then it is cancelled."""
        self.instance_tag_in_dialplan = False
        """True: the dialplan tags inbound calls itself, so they cost no tag request.
        The app sets the global variable ``VOXTRA_INSTANCE_<app name>`` to its instance
        id at start and on every reconnect, and the dialplan copies it onto the channel
        before ``Stasis()``: ``Set(VOXTRA_INSTANCE=${VOXTRA_INSTANCE_<app name>})``
        (docs/calls.md). Where Asterisk shows channel variables in its events (ari.conf
        ``channelvars = VOXTRA_INSTANCE``), a call arriving without this instance's tag
        is still tagged by a request; without them the dialplan is trusted. If the
        global cannot be set, every call is tagged by a request, as by default."""
        self._instance_published = False
        self.ignored_events: tuple[str, ...] = IGNORED_EVENTS
        """ARI event kinds Asterisk is asked not to send this app (its ``eventFilter``,
        set on each connection; read at :meth:`start`). Nothing in Voxtra reads
        ChannelVarset or ChannelDialplan, and they are 5 of the 16 events an originated
        call brings (docs/performance.md). ``call.wait_for_event()`` for an ignored
        kind raises ConfigError rather than waiting for an event that never comes: set
        ``()`` (or a shorter tuple) before ``start()`` to receive them."""
        if instance_id is not None and not _INSTANCE_ID.fullmatch(instance_id):
            raise ConfigError(
                f"instance_id: expected 1-32 letters, digits, '_' or '.', got {instance_id!r}"
            )
        self._fixed_instance = instance_id or settings.instance_id
        self._instance_slot: InstanceSlot | None = None
        self.instance_id: str = self._fixed_instance or self._claim_instance()
        """Marks the channels and bridges this app owns; reconcile touches no others.
        By default stable across restarts and distinct between live processes on a host
        (see :mod:`voxtra.instance`): a restarted process reclaims what its crashed
        predecessor left. The slot is held until :meth:`stop`."""
        self.teardown_timeout = 30.0
        """At ``stop()``: seconds hung-up calls get to tear down (recordings included)."""
        self.call_end_timeout = 10.0
        """Seconds each ``on_call_end`` hook gets, then it is cancelled (logged) and the
        next one runs: a hook stuck on a store that never answers would otherwise keep
        its call's task, and ``stop()``, waiting for ever."""
        self.delivery_timeout = 30.0
        """At ``stop()``: seconds recording uploads get; what is left stays spooled."""
        self.outage_wait = 20.0
        """Seconds a call's ARI request that lost Asterisk waits for the events to
        reconnect and reconcile (see :meth:`wait_reconciled`), then gives up."""
        self.reconcile_grace = 2.0
        """Seconds a channel reconcile found in the app, claimed by no call of this
        process, is given for its StasisStart to arrive before it is hung up or adopted
        (see :meth:`_settle_strays`)."""
        self._reconciled_generation = 0
        self._reconciled = asyncio.Event()  # replaced (and the old one set) per reconcile
        self._amd_steps: set[str] = set()
        """Channels of originates in their AMD dialplan step (see :meth:`_missed_start`)."""
        self.takeover_poll = 2.0
        """Seconds between checks whether another client still holds the Stasis app."""
        self.replaced = False
        """True while another ARI client has taken this app's Stasis registration."""
        self._takeover: asyncio.Task[None] | None = None
        self._teardowns: set[asyncio.Future[None]] = set()
        self._startup: list[Hook] = []
        self._started = asyncio.Event()
        """Set once the startup hooks are done (or the app stops): inbound calls wait."""
        self._delivered_hooks: list[DeliveredHook] = []
        self._call_start_hooks: list[CallHook] = []
        self._call_end_hooks: list[CallHook] = []
        self._shutdown: list[Hook] = []
        self._accepting = False
        self._stream: AriEventStream | None = None
        self._runner: asyncio.Task[None] | None = None
        self._call_tasks: set[asyncio.Task[None]] = set()
        self.ticker = Ticker()
        """One 20 ms pacing clock shared by every call's outbound RTP."""
        self._audiosocket: AudioSocketServer | None = None
        self._audiosocket_lock = asyncio.Lock()  # calls attaching at once share one listener

    def _claim_instance(self) -> str:
        """Take this host's lowest free slot for the app name; its id (see module doc)."""
        try:
            self._instance_slot = InstanceSlot.acquire(self.app_name)
        except OSError as exc:
            fallback = uuid.uuid4().hex[:12]
            logger.warning(
                "no instance slot (%s): using the random instance id %s; a restart will "
                "not reclaim this process's calls (set instance_id to make it stable)",
                exc,
                fallback,
            )
            return fallback
        return self._instance_slot.instance_id

    def use_app_name(self, app_name: str) -> None:
        """Serve another Stasis app name (``voxtra run --app-name``); before start()."""
        if self._runner is not None:
            raise VoxtraError("cannot change the app name of a running app")
        self.settings = VoxtraSettings(**{**dict(self.settings), "app_name": app_name})
        self.app_name = self.settings.app_name
        if self._instance_slot is not None:
            # Slots are per app name: start() claims one under the new name.
            self._instance_slot.release()
            self._instance_slot = None
            if self._fixed_instance is None:
                self.instance_id = self._claim_instance()

    def use_transport(self, transport: AriTransport) -> None:
        """Reach Asterisk through ``transport`` instead of HTTP/WebSocket; before start().

        How a test runs the app against :class:`voxtra.testing.FakeAsterisk`.
        """
        if self._runner is not None:
            raise VoxtraError("cannot change the ARI transport of a running app")
        self.ari = AriClient(
            self.settings.ari_url,
            self.settings.username,
            self.settings.password,
            transport=transport,
        )

    # -- registration ---------------------------------------------------------------

    def route(self, extension: str | None = None, **criteria: Any) -> Callable[[H], H]:
        """Register the decorated handler for calls matching all given criteria."""
        return self.router.route(extension, **criteria)

    def add_route(self, route: Route) -> Route:
        return self.router.add(route)

    def default(self, handler: H) -> H:
        """The handler for calls no route matches (usable as ``@app.default``).

        "default" is the concept's one name: it is ``Router(default=...)`` and the
        ``router.default`` attribute; ``Router.set_default`` and ``app.set_default``
        are the same setter under the name a Router has to use (its ``default`` is
        the attribute)."""
        return self.router.set_default(handler)

    set_default = default
    """Alias of :meth:`default`, so code written against a Router works on the app."""

    def dispatcher(self, fn: Any) -> Any:
        """An async function ``(CallInfo) -> handler | Route | None`` tried before routes."""
        return self.router.set_dispatcher(fn)

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``async def hook()`` at :meth:`start`, once the app is connected and can
        originate calls. A hook that raises makes ``start()`` stop the app and raise."""
        check_callback(hook, "on_startup", ())
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``async def hook()`` at :meth:`stop`, after the calls ended."""
        check_callback(hook, "on_shutdown", ())
        self._shutdown.append(hook)
        return hook

    def on_recording_delivered(self, hook: DeliveredHook) -> DeliveredHook:
        """Run ``hook(metadata)`` once for every recording its sink confirmed stored.

        Registered before ``start()``, it also sees recordings an earlier run spooled.
        ``hook`` may be a plain or an async function of one argument.
        """
        check_callback(hook, "on_recording_delivered", ("metadata",), require_async=False)
        self._delivered_hooks.append(hook)
        return hook

    async def _recording_delivered(self, meta: RecordingMetadata) -> None:
        for hook in self._delivered_hooks:
            try:
                result = hook(meta)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_recording_delivered hook failed for %s", meta.name)

    def on_call_start(self, hook: CallHook) -> CallHook:
        """Run ``await hook(call)`` as each call starts in the app (inbound: before it
        is routed; outbound: once answered), before its handler. For observers (a call
        store, metrics): a hook that raises is logged and the call goes on; the
        handler waits for it, so keep it short."""
        check_callback(hook, "on_call_start", ("call",))
        self._call_start_hooks.append(hook)
        return hook

    def on_call_end(self, hook: CallHook) -> CallHook:
        """Run ``await hook(call)`` once per call after its teardown: its
        ``end_reason``, ``hangup_cause`` and ``duration`` are final then. It runs
        however the call ended, its teardown cancelled at ``stop()`` included. A hook
        that raises is logged; one still running after ``call_end_timeout`` seconds is
        cancelled (logged) and the next one runs."""
        check_callback(hook, "on_call_end", ("call",))
        self._call_end_hooks.append(hook)
        return hook

    async def _run_call_hooks(self, hooks: list[CallHook], session: CallSession) -> None:
        for hook in hooks:
            try:
                await hook(session)
            except Exception:
                logger.exception("call %s: call hook %r failed", session.id, hook)

    def get_session(self, call_id: str) -> CallSession | None:
        return self.active_sessions.get(call_id)

    async def supervise(
        self,
        call_id: str,
        endpoint: str,
        mode: str = "spy",
        *,
        to: str | None = None,
        ring_time: int = 30,
        keys: bool = True,
    ) -> Supervision:
        """Dial a supervisor's phone (``endpoint``) into the live call ``call_id``:
        ``spy`` (hears caller and agent), ``whisper`` with ``to="agent"`` or
        ``to="caller"`` (only that one hears it), ``barge`` (both do). Switch later with
        ``await supervision.set_mode(SupervisorMode("barge"))``; ``end()`` hangs the
        supervisor up. Raises ``CallBusy``/``CallNoAnswer``/``CallFailed`` if it does not
        answer. With ``keys``, the supervisor switches mode from its phone: 1 spy,
        2 whisper to the agent, 3 whisper to the caller, 4 barge. See
        :mod:`voxtra.calls.parties`."""
        session = self.active_sessions.get(call_id)
        if session is None or session.ended:
            raise VoxtraError(f"no live call {call_id!r} in app {self.app_name!r}")
        chosen = SupervisorMode(mode, to)  # type: ignore[arg-type]
        return await session.parties.supervise(
            endpoint, chosen, ring_time=ring_time, keys=SUPERVISOR_KEYS if keys else None
        )

    def assist(
        self,
        call: CallSession | str,
        *,
        stt: STT | None = None,
        tts: TTS | None = None,
        vad: VAD | None = None,
        sides: Mapping[str, str] | None = None,
    ) -> AgentAssist:
        """Agent assist on a call between two people (``async with app.assist(call) as
        assist:``): each side's audio and transcripts, labelled ``caller`` and
        ``callee``; ``await assist.whisper("callee", text)``; ``assist.suggest(text)``.
        Nobody is moved. ``call`` is a call of this app (session or id), or any channel
        id in Asterisk; ``sides`` names the two channels when they cannot be found.
        ``stt``/``tts``/``vad`` default to the app's. See :mod:`voxtra.calls.assist`."""

        async def resolve() -> tuple[CallParties, dict[str, str], bool]:
            session = call if isinstance(call, CallSession) else self.active_sessions.get(call)
            own = session is None
            parties = session.parties if session else await foreign_parties(self, str(call))
            found = dict(sides or {})
            if not found:
                found = {"caller": parties.context.id, "callee": await other_party(parties)}
            return parties, found, own

        assist = AgentAssist(
            resolve,
            stt=stt or self.voice.stt,
            tts=tts or self.voice.tts,
            vad=vad or self.voice.vad,
            on_close=self._assists.discard,
        )
        self._assists.add(assist)
        return assist

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> VoxtraApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 10.0) -> None:
        """Connect to ARI and start accepting calls. Raises if ARI is unreachable.

        ``on_startup`` hooks run last, once calls can be taken and originated. If
        anything fails (ARI, the events, a hook), what was opened is closed again
        and the error is raised.
        """
        if self._runner is not None:
            return
        if self._fixed_instance is None and (
            self._instance_slot is None or not self._instance_slot.held
        ):
            self.instance_id = self._claim_instance()  # released by an earlier stop()
        self._started.clear()
        # The new stream counts its connections from 1 again: a generation reconciled in
        # an earlier run made wait_reconciled() answer True at once during an outage.
        self._reconciled_generation = 0
        try:
            await self.ari.asterisk.info()
            self.recordings = AppRecordings(
                self.ari,
                self.recording_sink or LocalFileSink(self.settings.recordings_dir),
                self.settings.spool_dir,
                on_delivered=self._recording_delivered,
            )
            # Said once: the spool is created relative to the working directory by
            # default, and users found it there without knowing what made it.
            logger.info(
                "recordings: spooled in %s until their sink has them (settings.spool_dir)",
                _absolute(self.settings.spool_dir),
            )
            await self.recordings.resume()  # what an earlier run could not deliver
        except BaseException:
            # A failed start leaves nothing open: no aiohttp session ("Unclosed client
            # session" at exit), no instance slot.
            await self._close_unstarted()
            raise
        self.registry.ignored_kinds = frozenset(self.ignored_events)
        if self.instance_tag_in_dialplan:
            # Before the events connect, so the first calls already find it.
            await self._publish_instance()
        self._stream = AriEventStream(
            self.ari,
            self.app_name,
            on_event=self._on_event,
            on_connect=self._reconcile,
            heartbeat=self.settings.ari_heartbeat,
            max_backoff=self.settings.ari_reconnect_max_backoff,
            ignore=self.ignored_events,
            # Events about a channel no call owns (a Local channel's ;2 half: 4 of an
            # originated call's 11) are dropped unparsed: what _on_event would do
            # with them, minus 5 us of parsing each.
            wants=self.registry.concerns,
        )
        self._accepting = True
        # The HTTP providers' shared aiohttp-backed clients (voxtra/providers/http.py):
        # entered before the events' task starts, so every call's task inherits it.
        self._http = HttpScope()
        self._http.enter()
        self._runner = asyncio.create_task(self._run_stream(), name="voxtra-ari-events")
        try:
            await self._stream.wait_connected(timeout)
        except TimeoutError:
            await self.stop()
            raise VoxtraError(f"ARI events did not connect within {timeout} s") from None
        # Startup hooks run now, not before the connection: a hook that originates a
        # call (a reminder sent at start) needs the app running and its events flowing.
        # Inbound calls arriving meanwhile are held (see _run_call), so handlers still
        # never run before the hooks are done.
        try:
            for hook in self._startup:
                await hook()
        except BaseException:
            await self.stop()
            raise
        self._started.set()
        # Long-lived server: move start-up objects (and the embedding program's heap) out
        # of the collector's way; full collections otherwise stall the 20 ms media clock
        # (~23 ms at 500 calls; 43 ms of a large heap made a hole in live echo audio),
        # and collect the middle generation rarely (voxtra/media/collector.py: 5-11 ms
        # every 0.4 s at 200 agent calls). Here, not only in run(): apps embedded with
        # start()/stop() need it as much.
        settle_collector()

    async def _close_unstarted(self) -> None:
        """Undo a start() that failed before the event stream ran."""
        if self.recordings is not None:
            with contextlib.suppress(Exception):
                await self.recordings.aclose()
            self.recordings = None
        await self.ari.close()
        if self._instance_slot is not None:
            self._instance_slot.release()

    async def _run_stream(self) -> None:
        assert self._stream is not None
        try:
            await self._stream.run()
        except AriError as exc:
            logger.error("ARI event stream stopped: %s", exc)

    async def stop(self, deadline: float | None = None) -> None:
        """Drain and disconnect.

        1. No new calls: a call arriving now is hung up (logged).
        2. Running calls get ``deadline`` seconds (default ``settings.handler_deadline``)
           to end by themselves.
        3. The rest are hung up and get ``teardown_timeout`` seconds to tear down (a
           recording still running is stopped, fetched and spooled then); a call still
           not done is cancelled, and its teardown still gets that time. Each call's
           ``on_call_end`` hooks run after its teardown, however it ended (each for at
           most ``call_end_timeout`` seconds).
        4. Recording uploads get ``delivery_timeout`` seconds; what is not delivered by
           then stays spooled and is delivered by the next ``start()``.
        Finally every bridge and channel the app created is destroyed.
        """
        if self._runner is None:
            await self.ari.close()
            if self._instance_slot is not None:
                self._instance_slot.release()
            return
        self._accepting = False
        self._started.set()  # calls held for the startup hooks see the app stopping
        loop = asyncio.get_running_loop()
        deadline = self.settings.handler_deadline if deadline is None else deadline
        if self._call_tasks:
            logger.info(
                "stopping: taking no new calls; %d call(s) get %.1f s to end",
                len(self.active_sessions),
                deadline,
            )
            _, pending = await asyncio.wait(set(self._call_tasks), timeout=deadline)
            if pending:
                logger.info("hanging up %d call(s) still running at shutdown", len(pending))
        sessions = list(self.active_sessions.values())
        for session in sessions:
            session.context.end_because(CallEndReason.SHUTDOWN)
        # At once, not one after another: with Asterisk unreachable every hang-up waits
        # out the REST timeout (10 s), and stop() took that long per call (8 calls at a
        # 1 s timeout: 9.2 s; now about one timeout).
        await _at_once(partial(_hang_up, session) for session in sessions)
        teardown_end = loop.time() + self.teardown_timeout
        if self._call_tasks:
            _, pending = await asyncio.wait(set(self._call_tasks), timeout=self.teardown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                # A call cancelled in its handler wait goes on to its teardown and waits
                # for it: a teardown stuck (a recording fetch that never returns) kept
                # stop() waiting for ever. A second cancel ends that wait; the teardown
                # itself is handled below.
                _, stuck = await asyncio.wait(pending, timeout=1.0)
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._teardowns:
            # A cancelled call leaves its (shielded) teardown running: wait for it, or a
            # recording it is finalising would meet a closed delivery. One cancelled
            # here still runs the call's on_call_end hooks (bounded, see
            # _run_call_end_hooks) before it ends.
            _, pending_teardowns = await asyncio.wait(
                set(self._teardowns), timeout=max(0.1, teardown_end - loop.time())
            )
            if pending_teardowns:
                logger.warning(
                    "%d call teardown(s) still running after %.0f s; cancelling them",
                    len(pending_teardowns),
                    self.teardown_timeout,
                )
                for teardown in pending_teardowns:
                    teardown.cancel()
                await asyncio.gather(*pending_teardowns, return_exceptions=True)
        for assist in list(self._assists):  # on channels that are no call of the app
            await assist.close()
        await self._destroy_leftovers()
        for hook in self._shutdown:
            try:
                await hook()
            except Exception:
                logger.exception("on_shutdown hook failed")
        if self.recordings is not None:
            if not await self.recordings.drain(self.delivery_timeout):
                logger.warning(
                    "%d recording(s) not delivered at shutdown (still failing after their "
                    "retries, or past the %.0f s drain deadline); they stay spooled in %s "
                    "for the next start",
                    self.recordings.pending,
                    self.delivery_timeout,
                    self.settings.spool_dir,
                )
            await self.recordings.aclose()  # unfinished uploads stay spooled
        await EngineHub.close_all(self.ticker)  # media.engine: the app's one engine
        await self.ticker.aclose()
        if self._audiosocket is not None:
            await self._audiosocket.close()
            self._audiosocket = None
        if self._takeover is not None:
            self._takeover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._takeover
            self._takeover = None
        assert self._stream is not None
        await self._stream.stop()
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        self._runner = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self.ari.close()
        if self._instance_slot is not None:
            # Now a new process (or a restart) takes this slot and its id.
            self._instance_slot.release()

    async def _destroy_leftovers(self) -> None:
        # Channels and bridges together (neither needs the other gone first), at once
        # for the reason the hang-ups in stop() are: one REST timeout, not one each.
        channels = [partial(self._release_leftover, c) for c in self.registry.internal]
        bridges = [partial(self._destroy_leftover, b) for b in self.registry.bridges]
        await _at_once([*channels, *bridges])

    async def _release_leftover(self, channel_id: str) -> None:
        try:
            await self._hangup_quietly(channel_id)
        finally:
            self.registry.forget_channel(channel_id)

    async def _destroy_leftover(self, bridge_id: str) -> None:
        try:
            with contextlib.suppress(AriError):
                await self.ari.bridges.destroy(bridge_id)
        finally:
            self.registry.forget_bridge(bridge_id)

    def configure_logging(self, level: str | None = None, *, json: bool = False) -> None:
        """Set the ``voxtra`` loggers' level: ``level``, else ``settings.log_level``.

        Without either, logging is left as the application configured it. With one and
        no handler anywhere, a stderr handler is added so the messages are seen at all.
        ``json``: records go to stderr as JSON lines with the call id
        (:mod:`voxtra.logs`).
        """
        level = level or self.settings.log_level
        if json:
            use_json_logs(level or "INFO")
        if level is None:
            return
        logging.getLogger("voxtra").setLevel(level.upper())
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run(self, *, log_level: str | None = None) -> None:
        """Run until SIGINT/SIGTERM, then drain and stop (blocking).

        ``log_level`` (else ``settings.log_level``) sets the ``voxtra`` loggers' level.
        """
        self.configure_logging(log_level)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await self.start()
            logger.info("Voxtra app %r is running on %s", self.app_name, self.settings.ari_url)
            try:
                await stop.wait()
            finally:
                await self.stop()

        eventloop.run(main(), self.settings.event_loop)

    # -- event dispatch (synchronous: never awaits user code) ---------------------------

    def _on_event(self, event: AriEvent) -> None:
        if isinstance(event, StasisStart):
            self._on_stasis_start(event)
            return
        if isinstance(event, ApplicationReplaced):
            self._on_replaced(event)
            return
        channel_id = event.channel_id
        if channel_id is not None:
            pending = self.registry.originates.get(channel_id)
            if pending is not None:
                self._on_originate_event(pending, event)
        self.registry.dispatch(event)

    def _on_stasis_start(self, event: StasisStart) -> None:
        channel = event.channel
        if self.registry.channel_started(channel):
            return  # an internal channel or an originate: its waiter has it
        existing = self.registry.call(channel.id)
        if existing is not None and not existing.ended_event.is_set():
            return
        # (an ended session with this id: the channel left the app, e.g. by a dialplan
        # transfer, and came back: that is a new call)
        if not self._accepting:
            logger.warning(
                "app %r is stopping and takes no new calls: hanging up %s (caller %r)",
                self.app_name,
                channel.id,
                channel.caller.number if channel.caller else "",
            )
            self._spawn_detached(self._hangup_quietly(channel.id))
            return
        info = CallInfo.from_channel(channel, event.args)
        self._start_call(self._new_session(channel, info=info), info)

    def _new_session(
        self,
        channel: Channel,
        *,
        info: CallInfo | None = None,
        direction: CallDirection = CallDirection.INBOUND,
        args: tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
        called_number: str | None = None,
    ) -> CallSession:
        """A session for ``channel``, registered (its events flow from now on)."""
        session = CallSession(
            self,
            channel,
            direction=direction,
            args=info.args if info is not None else args,
            metadata=metadata,
            # The number its route matched (a dialled-number variable, else the
            # extension): call.called_number and CallInfo.called_number are one fact.
            called_number=info.called_number if info is not None else called_number,
            voice=self.voice,
        )
        self.registry.add_call(session.context)
        self.active_sessions[session.id] = session
        return session

    async def _publish_instance(self) -> None:
        """Set ``VOXTRA_INSTANCE_<app>`` for the dialplan (``instance_tag_in_dialplan``)."""
        try:
            await self.ari.asterisk.set_variable(
                INSTANCE_GLOBAL_PREFIX + self.app_name, self.instance_id
            )
        except AriError as exc:
            self._instance_published = False
            logger.warning(
                "cannot set %s%s for the dialplan (%s): tagging each call by a request",
                INSTANCE_GLOBAL_PREFIX,
                self.app_name,
                exc,
            )
        else:
            self._instance_published = True

    def _needs_tag(self, channel: Channel) -> bool:
        """Whether an inbound call must be tagged by a request (see
        ``instance_tag_in_dialplan``)."""
        if not (self.instance_tag_in_dialplan and self._instance_published):
            return True
        shown = channel.channelvars
        return shown is not None and shown.get(INSTANCE_VARIABLE) != self.instance_id

    async def _tag(self, channel_id: str) -> None:
        """Mark a call handed to this app as ours (see the module doc: reconcile)."""
        try:
            await self.ari.channels.set_variable(channel_id, INSTANCE_VARIABLE, self.instance_id)
        except AriError as exc:
            logger.debug("call %s: cannot tag it with the instance id: %s", channel_id, exc)

    def _start_call(
        self, session: CallSession, info: CallInfo | None, handler: CallHandler | None = None
    ) -> asyncio.Task[None]:
        http = self._http
        # A call started from outside the app's tasks (a Twilio stream's, in the web
        # server's task) still gets the app's shared HTTP clients.
        context = None if http is None or current_scope() is http else context_with(http)
        task = asyncio.create_task(
            self._run_call(session, info, handler),
            name=f"voxtra-call-{session.id}",
            context=context,
        )
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)
        return task

    def start_session(
        self, session: CallSession, info: CallInfo | None, handler: CallHandler | None = None
    ) -> asyncio.Task[None]:
        """Run a call that came in through another telephony backend (Twilio): routed by
        ``info`` (or run by ``handler``), torn down and drained like an Asterisk call.
        It is not in the registry: it has no ARI channel (reconcile must not end it)."""
        self.active_sessions[session.id] = session
        return self._start_call(session, info, handler)

    def _spawn_detached(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)

    async def _hangup_quietly(self, channel_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.ari.channels.hangup(channel_id)

    # -- one call ---------------------------------------------------------------------

    async def _run_call(
        self, session: CallSession, info: CallInfo | None, handler: CallHandler | None
    ) -> None:
        """A call's whole life: route, run the handler, hang up, tear down.

        Everything the call starts runs in its context's task group, opened here; the
        context's teardown (one code path) then releases what the call owns and runs
        its hangup callbacks once. If the call ends while the handler still runs, every
        wait in the handler raises CallEnded at once; a handler busy with something
        else gets ``hangup_grace`` seconds before it is cancelled.
        """
        self.calls_handled += 1
        context = session.context
        # Copied into every task the call starts: its log records carry the call id.
        CALL_ID.set(session.id)
        try:
            async with context.task_group() as group:
                await self._drive_call(session, info, handler, group)
        except Exception:
            logger.exception("call %s: internal error", session.id)
        finally:
            context.handler_done.set()
            # A call holding nothing to release (most) is torn down here and now: the
            # task and shield below were four loop callbacks a call for nothing.
            released = context.release_now()
            if released and not self._call_end_hooks:
                self._unregister(session)
            else:
                # Its own task, known to stop(): cancelling this call must not orphan
                # its teardown (a recording it finalises would meet a closed delivery)
                # nor skip its on_call_end hooks, as it did when the cancel came while
                # it waited for the teardown (stop() giving up on a stuck one): the
                # call's trace span was never ended, its platform row stayed "in
                # progress" (tests/unit/test_call_end_hooks.py).
                finish = asyncio.ensure_future(self._finish_call(session, released))
                self._teardowns.add(finish)
                finish.add_done_callback(self._teardowns.discard)
                await asyncio.shield(finish)

    async def _finish_call(self, session: CallSession, released: bool) -> None:
        """Tear the call down (unless ``released``: nothing was left), forget it, then
        run its on_call_end hooks: those run whatever became of the teardown. A cancel
        (stop() giving up on the call) ends the step it lands in, not the hooks after
        it; it is raised once they are done."""
        cancelled = False
        if not released:
            try:
                await session.context.teardown()
            except asyncio.CancelledError:
                cancelled = _take_back_cancel()
                logger.warning("call %s: teardown cancelled", session.id)
            except Exception:
                logger.exception("call %s: teardown failed", session.id)
        self._unregister(session)
        if self._call_end_hooks and await self._run_call_end_hooks(session):
            cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    async def _run_call_end_hooks(self, session: CallSession) -> bool:
        """Each on_call_end hook once, each for at most ``call_end_timeout`` seconds;
        True if a cancel cut one short (the rest still ran: each of them may be what
        ends a trace span or a call's row in the platform's store)."""
        cancelled = False
        for hook in self._call_end_hooks:
            timer = asyncio.timeout(self.call_end_timeout)
            try:
                async with timer:
                    await hook(session)
            except asyncio.CancelledError:
                logger.warning("call %s: on_call_end hook %r cancelled", session.id, hook)
                cancelled = _take_back_cancel() or cancelled
            except Exception:
                if timer.expired():
                    logger.error(
                        "call %s: on_call_end hook %r still running after %.1f s; cancelled",
                        session.id,
                        hook,
                        self.call_end_timeout,
                    )
                else:
                    logger.exception("call %s: call hook %r failed", session.id, hook)
        return cancelled

    async def _drive_call(
        self,
        session: CallSession,
        info: CallInfo | None,
        handler: CallHandler | None,
        group: asyncio.TaskGroup,
    ) -> None:
        context = session.context
        handler_task: asyncio.Task[None] | None = None
        limit = self.settings.max_call_duration
        if limit is not None:
            context.spawn(self._limit_duration(context, limit), name=f"voxtra-limit-{session.id}")
        # An inbound Asterisk call is tagged with the instance id (reconcile's mark, see
        # the module doc) right after its handler task is made, not before: the
        # handler then starts while the tag's round trip is under way (it waited for
        # it: inbound dispatch p99 5.7 ms against 1.0 for originated calls, paced,
        # docs/performance.md). With a pooled connection free, the tag is written to the
        # socket before anything the handler sends; when the tag needs a new connection
        # the handler may run first (a CI run read the tag 404 from another process
        # just after the handler's first line). It lands within a round trip either
        # way, as it did before the handler; nothing but reconcile reads it.
        tag = (
            session.direction is CallDirection.INBOUND
            and session.backend == "asterisk"
            and self._needs_tag(context.channel)
        )
        try:
            if self._call_start_hooks:
                await self._run_call_hooks(self._call_start_hooks, session)
            if session.direction is CallDirection.INBOUND and not self._started.is_set():
                await self._started.wait()  # the startup hooks are still running
                if not self._accepting:  # and the start failed
                    if tag:
                        await self._tag(session.id)
                    with contextlib.suppress(VoxtraError):
                        await session.hangup()
                    return
            if handler is None and info is not None:
                handler = await self._resolve(session, info)
            if handler is None:
                if tag:
                    await self._tag(session.id)
                await self._unrouted(session)
                await session.wait_ended(timeout=10.0)
                return
            handler_task = group.create_task(
                self._run_handler(session, handler), name=f"voxtra-handler-{session.id}"
            )
            if tag:
                await self._tag(session.id)
            # One future completed by whichever comes first, the handler's end or the
            # call's (an on-end hook of the context): no task waiting on ended_event,
            # and no asyncio.wait() (its waiter, set and callbacks) a call.
            first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            context.on_end(partial(_set_done, first))
            if not handler_task.done() and not first.done():
                handler_task.add_done_callback(partial(_set_done, first))
                await first
            if handler_task.done():
                if not (context.transferred or context.handed_off):
                    await session.hangup()
                await session.wait_ended(timeout=None if context.handed_off else 10.0)
            else:
                _, pending = await asyncio.wait({handler_task}, timeout=self.hangup_grace)
                if pending:
                    handler_task.cancel()
                    await asyncio.gather(handler_task, return_exceptions=True)
        except TimeoutError:
            logger.warning("call %s did not end after hangup; giving up on it", session.id)
        except asyncio.CancelledError:
            if handler_task is not None:
                handler_task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(session.hangup())
            raise

    async def _limit_duration(self, context: CallContext, limit: float) -> None:
        """Hang up a call still in the app ``limit`` seconds after the app took it."""
        await asyncio.sleep(limit)
        if context.ended:
            return
        logger.warning("call %s reached max_call_duration (%.1f s): hanging up", context.id, limit)
        context.end_because(CallEndReason.MAX_DURATION)
        try:
            await context.hangup()
        except VoxtraError as exc:
            logger.warning("call %s: hanging up at max_call_duration failed: %s", context.id, exc)

    async def _resolve(self, session: CallSession, info: CallInfo) -> CallHandler | None:
        try:
            match = await self.router.resolve(info)
        except RoutingError:
            logger.exception("call %s: routing failed", session.id)
            return None
        if match is None:
            return None
        session.metadata = {**match.metadata, **session.metadata}
        return match.handler

    async def _run_handler(self, session: CallSession, handler: CallHandler) -> None:
        session.context.handler_done.clear()
        try:
            await handler(session)
        except CallEnded:
            logger.debug("call %s: caller hung up during the handler", session.id)
        except Exception:
            session.state = CallState.FAILED
            logger.exception(
                "call %s: handler %s raised", session.id, getattr(handler, "__qualname__", handler)
            )
        finally:
            session.context.handler_done.set()

    async def _unrouted(self, session: CallSession) -> None:
        logger.warning(
            "call %s (extension %r, caller %r): no route matched and no default handler; %s",
            session.id,
            session.called_number,
            session.caller_id,
            "answering and hanging up"
            if self.settings.unrouted == "answer_and_hangup"
            else "hanging up",
        )
        if self.settings.unrouted == "answer_and_hangup":
            with contextlib.suppress(VoxtraError):
                await session.answer()
        await session.hangup()

    def _unregister(self, session: CallSession) -> None:
        if self.active_sessions.get(session.id) is session:
            del self.active_sessions[session.id]
        self.registry.remove_call(session.context, kept_bridges=session.context.bridges)

    # -- what a call needs of the app (CallHost) ----------------------------------------

    def internal_id(self, kind: str) -> str:
        """A new id for a channel or bridge this app creates, marked with its instance."""
        return internal_id(kind, self.instance_id)

    def _owns_internal(self, ident: str) -> bool:
        """Whether ``ident`` is ``voxtra-internal-<kind>-<this instance>-<random>``."""
        if not ident.startswith(INTERNAL_PREFIX):
            return False
        parts = ident[len(INTERNAL_PREFIX) :].split("-")
        return len(parts) == 3 and parts[1] == self.instance_id

    async def audiosocket_server(self) -> AudioSocketServer:
        """The app's AudioSocket listener (started on first use)."""
        # Locked: calls attaching while it was starting each made a listener of their
        # own (50 calls at once: 11 on listeners that were never closed).
        async with self._audiosocket_lock:
            if self._audiosocket is None:
                media = self.settings.media
                server = AudioSocketServer(
                    media.bind_host,
                    advertised_host=media.advertise_host,
                    ticker=self.ticker,
                    allowed_peers=media.audiosocket_peers or None,
                )
                await server.start()
                self._audiosocket = server
            return self._audiosocket

    # -- outbound -------------------------------------------------------------------------

    async def originate(
        self,
        endpoint: str,
        *,
        caller_id: str | None = None,
        timeout: int = 30,
        variables: Mapping[str, str] | None = None,
        handler: CallHandler | None = None,
        metadata: Mapping[str, Any] | None = None,
        app_args: Sequence[str] = (),
        formats: str | Sequence[str] | None = None,
        channel_id: str | None = None,
        amd: bool | AmdConfig = False,
        on_ringing: Callable[[], None] | None = None,
    ) -> CallSession:
        """Call ``endpoint`` and wait until it answers.

        Returns the answered CallSession (running ``handler`` on it, if given, as its
        route handler). Raises :class:`CallBusy`, :class:`CallNoAnswer` or
        :class:`CallFailed` with Asterisk's hangup cause otherwise.

        ``formats`` are the codecs the new channel may use (``"ulaw"``, ``["slin",
        "alaw"]``). A SIP endpoint negotiates its own; a ``Local/`` channel has nobody to
        negotiate with and defaults to ``"slin"`` here: left to Asterisk it took a
        high-rate linear format and resampled every frame (measured: 10x Asterisk's CPU
        per call).

        ``channel_id`` (default: a new ``voxtra-out-...`` id) lets the caller know the
        channel before the answer, e.g. to hang up a call it gives up on while ringing.

        ``amd=True`` (or an :class:`~voxtra.calls.amd.AmdConfig`): answering-machine
        detection. The answered call first runs Asterisk's ``AMD()`` (the
        ``voxtra-amd`` dialplan context), and, if that is not sure, the framework
        listens; the session's ``amd`` then says ``human``, ``machine`` or ``unknown``
        and why, before the handler runs (see :mod:`voxtra.calls.amd`).

        ``on_ringing()`` is called once when the far end starts ringing (a call store's
        ``ringing`` status); a callback that raises is logged.

        A variable without a name or whose value is not text, and a ``caller_id`` with a
        control character (a line break), raise ConfigError before anything is dialled.
        """
        _check_originate(caller_id, variables)
        amd_config = AmdConfig() if amd is True else (amd or None)
        if amd_config is not None:
            variables = {**(variables or {}), **amd_config.variables(self.app_name)}
        if not self._accepting:
            raise AppNotRunning(
                "the app is stopping: it places no new calls"
                if self._runner is not None
                else "the app is not running (call start() first)"
            )
        channel_id = channel_id or f"voxtra-out-{uuid.uuid4().hex[:16]}"
        if formats is None and endpoint[:6].lower() == "local/":
            formats = "slin"
        pending = PendingOriginate(endpoint, on_ringing)
        late = pending.late
        self.registry.originates[channel_id] = pending
        try:
            await self.ari.channels.originate(
                endpoint,
                app=self.app_name,
                app_args=list(app_args) or None,
                channel_id=channel_id,
                caller_id=caller_id,
                timeout=timeout,
                variables={**(variables or {}), INSTANCE_VARIABLE: self.instance_id},
                formats=formats,
            )
            # The future itself is awaited, with a timer that fails it, rather than
            # wait_for(shield(...)): that made a waiter future, a shield's outer future
            # and three loop callbacks more a call (nothing else awaits this future,
            # so cancelling it with the caller is harmless).
            expiry = asyncio.get_running_loop().call_later(
                timeout + 5, _expire_originate, pending.future
            )
            try:
                channel = await pending.future
            except _OriginateExpired:
                await self._hangup_quietly(channel_id)
                raise CallNoAnswer(endpoint, None, "", f"not answered within {timeout} s") from None
            finally:
                expiry.cancel()
            if amd_config is not None:
                # Known to reconcile while the step runs: the call in the app is then
                # either not gone to the step yet or back from it (see _missed_start).
                self._amd_steps.add(channel_id)
                try:
                    channel, amd_result = await detect_amd(
                        self.ari, self.registry, channel_id, endpoint, amd_config
                    )
                finally:
                    self._amd_steps.discard(channel_id)
        except asyncio.CancelledError:
            # Whoever awaited the call gave up on it (a stopping worker, a timeout around
            # originate()): the phone must not go on ringing, or be answered into a call
            # nobody runs. Shielded: a second cancel must not leave it ringing either.
            await asyncio.shield(self._hangup_quietly(channel_id))
            raise
        except AriError as exc:
            raise await self._refusal(endpoint, exc) from exc
        finally:
            self.registry.originates.pop(channel_id, None)
            # A busy or unanswered call raises from the pending's future through this
            # frame: kept here, the pending would hold the exception that holds this
            # frame, a reference cycle a call (tests/unit/test_call_garbage.py).
            del pending
        session = self._new_session(
            channel,
            direction=CallDirection.OUTBOUND,
            args=tuple(app_args),
            metadata=dict(metadata or {}),
            called_number=_endpoint_number(endpoint),
        )
        for event in late:  # the far end hung up before the session was there to see it
            session.context.handle_event(event)
        handler = handler or _wait_until_ended
        decided = asyncio.Event()
        if amd_config is None:
            decided.set()
        else:
            session.amd = amd_result
            handler = _after_amd(handler, amd_config, decided)
        task = self._start_call(session, None, handler)
        # Returned once its task group is open: the caller may spawn() on it at once;
        # with AMD, once the verdict is final. The call's task opens its group in its
        # first step, which runs before this one resumes from sleep(0) (both are in
        # the loop's ready queue, the call's first): no waiting task is needed then
        # (one task and two loop passes less per originate).
        try:
            await asyncio.sleep(0)
            for ready in (session.context.running, decided):
                if ready.is_set() or task.done():
                    continue
                waiting = asyncio.ensure_future(ready.wait())
                try:
                    await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
        except asyncio.CancelledError:
            # Given up while the framework still listened for the AMD verdict: hung up,
            # as a call given up while it rings (it stayed answered, the session not
            # returned to anyone; without a handler, until the far end hung up).
            await asyncio.shield(_hang_up(session))
            raise
        return session

    async def _refusal(self, endpoint: str, exc: AriError) -> CallFailed:
        """The error for an originate Asterisk refused, saying what to fix if it can.

        Asterisk answers 500 "Allocation failed" both for an endpoint that does not
        exist and for one with no reachable contact; the endpoint's own state (one more
        ARI request, only on this failure path) tells them apart.
        """
        technology, _, rest = endpoint.partition("/")
        resource = rest.split("/", 1)[0]
        found: Endpoint | None = None
        if isinstance(exc, AriServerError) and resource and technology.lower() != "local":
            try:
                found = await self.ari.endpoints.get(technology, resource)
            except AriNotFound:
                return _refusal_error(
                    endpoint, exc, None, known_technology=await self._has_tech(technology)
                )
            except AriError:
                pass
        return _refusal_error(endpoint, exc, found)

    async def _has_tech(self, technology: str) -> bool:
        try:
            await self.ari.endpoints.list(technology)
        except AriNotFound:
            return False
        except AriError:
            pass
        return True

    def _on_originate_event(self, pending: PendingOriginate, event: AriEvent) -> None:
        if isinstance(event, Dial) and event.dialstatus:
            pending.dialstatus = event.dialstatus
        ringing = (isinstance(event, Dial) and event.dialstatus == "RINGING") or (
            isinstance(event, ChannelStateChange) and event.channel.state == "Ringing"
        )
        if ringing and not pending.rang and pending.on_ringing is not None:
            # Measured on 22.10.1 (a SIP phone ringing 1 s): state Ringing, then Dial
            # RINGING, both before the answer; the first of them counts.
            pending.rang = True
            try:
                pending.on_ringing()
            except Exception:
                logger.exception("originate %s: on_ringing callback failed", pending.endpoint)
        if pending.future.done():
            if isinstance(event, ChannelHangupRequest | ChannelDestroyed) and (
                not pending.future.cancelled() and pending.future.exception() is None
            ):
                pending.late.append(event)
            return
        if isinstance(event, ChannelDestroyed):
            pending.future.set_exception(
                originate_error(pending.endpoint, event.cause, event.cause_txt, pending.dialstatus)
            )
            pending.future.exception()
        elif isinstance(event, ChannelHangupRequest) and event.cause is not None:
            pending.future.set_exception(
                originate_error(pending.endpoint, event.cause, "", pending.dialstatus)
            )
            pending.future.exception()

    # -- reconcile after (re)connect ---------------------------------------------------------

    async def _reconcile(self, connection: Connection) -> None:
        """Match our sessions with what Asterisk has after a (re)connect."""
        if self.instance_tag_in_dialplan and connection.is_reconnect:
            # Another instance may have served the app meanwhile (and set it).
            await self._publish_instance()
        strays = await self._reconcile_channels(connection)
        if strays is None:
            # The connection ended before Asterisk answered (or this was cancelled with
            # it): not reconciled; the next connection's reconcile is what waiters get.
            return
        # Reconciled once the calls that are gone have ended: what wait_reconciled()
        # promises. Strays are settled after, as that waits a grace first.
        self._reconciled_generation = max(self._reconciled_generation, connection.generation)
        done, self._reconciled = self._reconciled, asyncio.Event()
        done.set()
        if strays.channels or strays.bridges:
            await self._settle_strays(connection, strays)

    @property
    def accepting(self) -> bool:
        """True while the app takes new calls (started, not stopping)."""
        return self._accepting

    @property
    def ari_connected(self) -> bool:
        """Whether the ARI events connection is up now (readiness checks)."""
        return self._stream is not None and self._stream.connected.is_set()

    def events_generation(self) -> int:
        """The events connection's generation now (0 before the first)."""
        return self._stream.generation if self._stream is not None else 0

    async def wait_reconciled(self, since: int, ended: asyncio.Event | None = None) -> bool:
        """After a request sent at events generation ``since`` failed to reach Asterisk:
        wait until a later connection has been reconciled (or ``ended`` is set), at most
        ``outage_wait`` seconds. True if that happened, False if not, or if ARI answers
        at once while the events stay connected (a one-off failure, not an outage).

        Why: killed, Asterisk resets websocket and AudioSocket media at once, long before
        the events reconnect; a handler's next request then failed with
        AriConnectionError although its call was gone, and teardown steps ran (and
        failed) during the outage, leaving recordings in Asterisk. Once reconciled, a
        session whose channel is gone has ended and its requests raise CallEnded.
        Not while stopping: an outage at shutdown leaves what is in Asterisk to the next
        start's recovery rather than holding stop() for it.
        """
        stream = self._stream
        if stream is None or not self._accepting:
            return False
        if stream.connected.is_set() and stream.generation == since:
            try:
                await asyncio.wait_for(self.ari.asterisk.info(), 2.0)
            except (AriError, TimeoutError):
                pass  # down: an outage the events will see too
            else:
                return False
        loop = asyncio.get_running_loop()
        end = loop.time() + self.outage_wait
        while self._reconciled_generation <= since:
            if ended is not None and ended.is_set():
                return True
            remaining = end - loop.time()
            if remaining <= 0 or not self._accepting:
                return False
            waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._reconciled.wait())}
            if ended is not None:
                waits.add(asyncio.ensure_future(ended.wait()))
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
        return True

    async def retry_after_outage(self, request: Callable[[], Awaitable[T]]) -> T:
        """An idempotent request (a hangup, a destroy, a recording stop): if it cannot
        reach Asterisk, wait for the reconnect (:meth:`wait_reconciled`) and send it
        once more."""
        since = self.events_generation()
        try:
            return await request()
        except AriConnectionError:
            if not await self.wait_reconciled(since):
                raise
        return await request()

    async def _reconcile_channels(self, connection: Connection) -> _Strays | None:
        """End the sessions and forget the internal channels and bridges Asterisk no
        longer has, and hand what waits for a StasisStart the one it missed. The
        channels and bridges of this app nobody claims are returned (for
        :meth:`_settle_strays`); None if ``connection`` ended before Asterisk answered.
        """
        registry = self.registry
        # Only what was registered before a listing was asked for is judged by it: events
        # keep being routed while the request is under way, and a call, internal channel
        # or bridge registered meanwhile is live although the answer may not have it (a
        # call whose StasisStart came then was ended as gone, its channel left in the
        # app). An internal channel whose StasisStart is still awaited is not judged
        # either: the request creating it may still be under way.
        calls = dict(registry.calls)
        internal = {
            channel_id: owner
            for channel_id, owner in registry.internal.items()
            if not registry.awaiting_start(channel_id)
        }
        channels = await self._listing(connection, "channels", self.ari.channels.list)
        if channels is None:
            return None
        live = {c.id for c in channels}
        for channel_id, context in calls.items():
            if channel_id not in live and registry.calls.get(channel_id) is context:
                logger.info("reconcile: call %s is gone; ending its session", channel_id)
                context.end_because(CallEndReason.GONE)
                context.mark_ended()
        for channel_id, owner in internal.items():
            if (
                channel_id not in live
                and channel_id in registry.internal
                and registry.internal[channel_id] is owner
            ):
                registry.forget_channel(channel_id)
                if owner is not None:
                    owner.channel_gone(channel_id)
        strays = _Strays()
        for channel in channels:
            if not _in_app(channel, self.app_name):
                continue
            if registry.claims(channel.id):
                await self._missed_start(channel)
            elif not channel.id.startswith(INTERNAL_PREFIX) or self._owns_internal(channel.id):
                strays.channels.add(channel.id)
        known = set(registry.bridges)
        bridges = await self._listing(connection, "bridges", self.ari.bridges.list)
        if bridges is None:
            return None
        live_bridges = {b.id for b in bridges}
        for bridge_id in known - live_bridges:
            registry.forget_bridge(bridge_id)
        strays.bridges.update(
            b.id for b in bridges if self._owns_internal(b.id) and not registry.bridge_owned(b.id)
        )
        return strays

    async def _listing(
        self, connection: Connection, what: str, request: Callable[[], Awaitable[list[T]]]
    ) -> list[T] | None:
        """``request()`` (a listing of ``what``), asked again after a growing delay while
        ``connection`` lasts; None once it has ended.

        A listing that failed once counted as a reconcile done: after an Asterisk
        restart whose first GET /channels failed, the sessions of its vanished calls
        lived on for ever (and wait_reconciled() said reconciled).
        """
        delay = RECONCILE_RETRY
        failures = 0
        while True:
            try:
                return await request()
            except AriError as exc:
                if not self._is_current(connection):
                    return None
                log = logger.warning if failures == 0 else logger.debug
                log("reconcile: cannot list %s (%s); asking again in %.2f s", what, exc, delay)
                failures += 1
            await asyncio.sleep(delay)
            if not self._is_current(connection):
                return None
            delay = min(delay * 2, RECONCILE_RETRY_MAX)

    def _is_current(self, connection: Connection) -> bool:
        """Whether ``connection`` is the events connection, and still up."""
        stream = self._stream
        return (
            stream is not None
            and stream.generation == connection.generation
            and stream.connected.is_set()
        )

    async def _missed_start(self, channel: Channel) -> None:
        """``channel``, claimed and in the app, may have had its StasisStart sent while
        the events were down (Asterisk does not replay it): hand it to what waits for
        it, as that event would have. A StasisStart still to come then finds nobody
        waiting and is dropped (see _on_stasis_start).

        Reproduced: an originate answered during an outage was taken for a stray, hung
        up (``originate()`` raised CallFailed) or adopted as an inbound call (and then
        hung up by ``originate()``, which raised CallNoAnswer)."""
        registry = self.registry
        if registry.awaiting_start(channel.id):
            registry.channel_started(channel)  # an internal channel (media, snoop, leg)
            return
        pending = registry.originates.get(channel.id)
        if (
            pending is None
            or pending.future.done()
            or channel.state != "Up"
            or registry.is_internal(channel.id)
        ):
            return
        if channel.id in self._amd_steps:
            # Listed in the app during its AMD step: back with a verdict, or not gone to
            # the step yet (a listing answered before the step took it). Only the step
            # sets AMDSTATUS.
            try:
                status = await self.ari.channels.get_variable(channel.id, AMD_STATUS_VARIABLE)
            except AriError:  # 404: not set (or the channel just left)
                return
            if not status or registry.originates.get(channel.id) is not pending:
                return
        logger.info("reconcile: call %s was answered while the events were down", channel.id)
        registry.channel_started(channel)

    async def _settle_strays(self, connection: Connection, strays: _Strays) -> None:
        """Hang up (``reconcile_policy="hangup"``) or adopt the calls of this instance
        still claimed by nobody ``reconcile_grace`` seconds after they were listed, hang
        up such internal channels of this instance and destroy such bridges.

        Why the wait: a channel can be listed in the app before its StasisStart has been
        handled (events lag behind REST when Asterisk or this loop is busy: a StasisStart
        waited up to 96 ms behind queued work, docs/performance.md), and a bridge
        before the request that made it has returned and registered it. Acting on the
        first listing hung up a call that had just come in (its tag set by the dialplan,
        its StasisStart 50 ms behind the listing). The channel's creation time cannot
        tell such a call instead: one can ring in the dialplan for a minute before it
        enters Stasis, and Asterisk's clock is not this host's. So only what nobody
        claims in two listings a grace apart, checked again after every wait, is touched.
        """
        await asyncio.sleep(self.reconcile_grace)
        channels = await self._listing(connection, "channels", self.ari.channels.list)
        if channels is None:
            return
        registry = self.registry
        for channel in channels:
            if (
                channel.id not in strays.channels
                or registry.claims(channel.id)
                or not _in_app(channel, self.app_name)
            ):
                continue
            if channel.id.startswith(INTERNAL_PREFIX):
                await self._hangup_quietly(channel.id)  # this instance's: a stray for that
                continue
            tagged = await self._instance_of(channel)
            if registry.claims(channel.id):
                continue  # its StasisStart came meanwhile: a call now
            if tagged != self.instance_id:
                # Another process serving the same app name (or one that has not tagged
                # its call yet): not ours to touch.
                logger.info(
                    "reconcile: leaving call %s alone (%s)",
                    channel.id,
                    f"it belongs to instance {tagged}" if tagged else "no instance claims it",
                )
                continue
            if self.settings.reconcile_policy == "adopt" and self._accepting:
                logger.info("reconcile: adopting call %s", channel.id)
                # Its Stasis arguments too, as its StasisStart gave them: without them
                # an adopted call was routed by its dialplan extension alone, to
                # another route than its own or to none (then hung up).
                info = CallInfo.from_channel(channel, _stasis_args(channel))
                self._start_call(self._new_session(channel, info=info), info)
            else:
                logger.info("reconcile: hanging up unowned call %s", channel.id)
                await self._hangup_quietly(channel.id)
        for bridge_id in strays.bridges:
            if not registry.bridge_owned(bridge_id):
                with contextlib.suppress(AriError):  # gone already, or left for next time
                    await self.ari.bridges.destroy(bridge_id)
                    registry.forget_bridge(bridge_id)

    async def _instance_of(self, channel: Channel) -> str:
        """The instance id a call was tagged with; "" if none."""
        tagged = (channel.channelvars or {}).get(INSTANCE_VARIABLE)
        if tagged is not None:
            return tagged
        try:
            return await self.ari.channels.get_variable(channel.id, INSTANCE_VARIABLE)
        except AriError:  # 404: no such variable (or the channel just left)
            return ""

    # -- the Stasis registration taken by another client ----------------------------------

    def _on_replaced(self, event: ApplicationReplaced) -> None:
        if event.application not in ("", self.app_name) or self.replaced:
            return
        self.replaced = True
        logger.error(
            "another ARI client took over the Stasis app %r: this process (instance %s) "
            "gets no new calls and no events for its %d live call(s) until it has the app "
            "back; checking every %.1f s whether the other has left",
            self.app_name,
            self.instance_id,
            len(self.active_sessions),
            self.takeover_poll,
        )
        if self._takeover is None or self._takeover.done():
            self._takeover = asyncio.create_task(self._take_back(), name="voxtra-take-back")

    async def _take_back(self) -> None:
        """Re-register the app (reconnect the events) once nobody else serves it."""
        checks = 0
        while self.replaced and self._accepting:
            await asyncio.sleep(self.takeover_poll)
            if not self._accepting:
                return
            if await self._served_elsewhere():
                checks += 1
                if checks * self.takeover_poll >= 60.0:  # say so again, once a minute
                    checks = 0
                    logger.error(
                        "the Stasis app %r is still served by another client; this "
                        "process (instance %s) gets no calls",
                        self.app_name,
                        self.instance_id,
                    )
                continue
            logger.warning("the other client left the Stasis app %r: taking it back", self.app_name)
            self.replaced = False
            if self._stream is not None:
                await self._stream.reconnect()

    async def _served_elsewhere(self) -> bool:
        """Whether some WebSocket serves the app now: probe it with a channel.

        Asterisk keeps a deserted app listed (``GET /applications/{name}`` answers 200
        while channels are in it), so the listing cannot tell. A channel sent into a
        served app stays in Stasis; into a deserted one, ``Stasis()`` fails and the
        channel is gone at once (measured: gone within 200 ms; in a served app, still
        there after 200 ms). The probe is an ExternalMedia channel aimed at the discard
        port with an internal id: a Voxtra peer ignores it, and it lives at most 1 s.
        """
        probe = self.internal_id("probe")
        try:
            await self.ari.channels.external_media(
                self.app_name, external_host="127.0.0.1:9", format="ulaw", channel_id=probe
            )
        except AriError as exc:
            logger.debug("cannot probe the Stasis app %r: %s", self.app_name, exc)
            return True
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.0
            while loop.time() < end:
                await asyncio.sleep(0.1)
                try:
                    await self.ari.channels.get(probe)
                except AriNotFound:
                    return False
            return True
        except AriError as exc:
            logger.debug("probing the Stasis app %r: %s", self.app_name, exc)
            return True
        finally:
            await self._hangup_quietly(probe)


def _check_originate(caller_id: str | None, variables: Mapping[str, str] | None) -> None:
    """ConfigError for what Asterisk takes and gets wrong (measured on 22.10.1): a
    variable with an empty name was dropped without a word; one whose value is not text
    was refused (400), raised as CallFailed, a call's outcome rather than the program's
    mistake; a caller id's line break was kept in its number (a CR LF between digits)
    or lost what followed it."""
    if isinstance(caller_id, str) and any(c < " " or c == "\x7f" for c in caller_id):
        raise ConfigError(
            f"originate(): caller_id {caller_id!r} has a control character (a line break?)"
        )
    for name, value in (variables or {}).items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"originate(): a variable needs a name, not {name!r}")
        if not isinstance(value, str):
            raise ConfigError(
                f"originate(): variable {name!r} must be set to a string, not {value!r}"
            )


def _after_amd(handler: CallHandler, config: AmdConfig, decided: asyncio.Event) -> CallHandler:
    """``handler``, after the framework listened where Asterisk's AMD was not sure."""

    async def handle(call: CallSession) -> None:
        try:
            if call.amd is not None and call.amd.verdict is AmdVerdict.UNKNOWN and config.listen:
                await call.refine_amd(config)
        finally:
            decided.set()
        await handler(call)

    return handle


async def _at_once(requests: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Run ``requests`` concurrently, ``STOP_CONCURRENCY`` at a time (each made only
    once it may start). One that raises is logged; the others go on."""
    gate = asyncio.Semaphore(STOP_CONCURRENCY)

    async def one(request: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await request()

    results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            logger.error("stopping: a clean-up request failed", exc_info=result)


async def _hang_up(session: CallSession) -> None:
    with contextlib.suppress(VoxtraError):
        await session.hangup()


@dataclass(slots=True)
class _Strays:
    """What reconcile found of this app that nobody here claims (ids)."""

    channels: set[str] = field(default_factory=set)
    bridges: set[str] = field(default_factory=set)


def _set_done(future: asyncio.Future[None], *_: object) -> None:
    if not future.done():
        future.set_result(None)


def _take_back_cancel() -> bool:
    """After a CancelledError caught to run what must still run: True if it was a
    cancel of the current task, taken back until it is raised again (``Task.uncancel``:
    asyncio's rule for code that goes on after catching one, as its timeouts and task
    groups count the cancels a task has pending). False: the step's own (a future it
    awaited was cancelled), nothing to raise."""
    task = asyncio.current_task()
    if task is None or not task.cancelling():
        return False
    task.uncancel()
    return True


class _OriginateExpired(Exception):
    """An originate's answer did not come in time (raised into ``originate()``)."""


def _expire_originate(future: asyncio.Future[Channel]) -> None:
    if not future.done():
        future.set_exception(_OriginateExpired())


async def _wait_until_ended(call: CallSession) -> None:
    """Handler for outbound calls placed without one: the caller drives the session."""
    call.handed_off = True


def _refusal_error(
    endpoint: str, exc: AriError, found: Endpoint | None, *, known_technology: bool = True
) -> CallFailed:
    """CallFailed for a refused originate; ``found``: the endpoint as ARI knows it (None
    if it does not exist or was not looked up)."""
    technology, _, rest = endpoint.partition("/")
    resource = rest.split("/", 1)[0]
    if isinstance(exc, AriServerError) and technology.lower() != "local" and resource:
        if found is None and not known_technology:
            return CallFailed(
                endpoint,
                None,
                exc.message,
                f"no such channel technology {technology!r}",
                "use one Asterisk has loaded (PJSIP, Local, ...); "
                "check the spelling and `core show channeltypes`",
            )
        if found is None:
            return CallFailed(
                endpoint,
                None,
                exc.message,
                f"no such endpoint: Asterisk has no {technology} endpoint {resource!r}",
                f"check the name against `{technology.lower()} show endpoints` in the "
                "Asterisk CLI and its section in the configuration (pjsip.conf)",
            )
        state = (found.state or "unknown").lower()
        if state != "online":
            return CallFailed(
                endpoint,
                None,
                exc.message,
                f"endpoint {resource!r} is {state}: not registered or not reachable",
                f"check that the device is registered (`pjsip show aor {resource}` lists "
                "its contacts) or give its aor a static contact",
            )
    return CallFailed(endpoint, None, exc.message, f"originate refused: {exc}")


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _endpoint_number(endpoint: str) -> str:
    resource = endpoint.split("/", 1)[-1]
    return resource.split("@", 1)[0].removeprefix("sip:")


def _stasis_args(channel: Channel) -> list[str]:
    """The arguments a call in the app entered it with (``Stasis(app,arg,...)``), read
    from a listing's channel, which has no StasisStart event to carry them."""
    dialplan = channel.dialplan
    if dialplan is None:
        return []
    return (dialplan.app_data or "").split(",")[1:]


def _in_app(channel: Channel, app_name: str) -> bool:
    dialplan = channel.dialplan
    if dialplan is None:
        return False
    return (dialplan.app_name or "").lower() == "stasis" and (
        (dialplan.app_data or "").split(",", 1)[0] == app_name
    )
