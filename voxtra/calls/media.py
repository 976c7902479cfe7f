"""A call's audio path: the caller and an ExternalMedia channel in one mixing bridge.

Created on first use of audio (or at answer when ``media.attach_on_answer`` is set):

1. a mixing bridge is created and the caller added;
2. the transport is opened (RTP socket, chan_websocket connection, AudioSocket);
3. the ExternalMedia channel is created, and added to the bridge only after its own
   StasisStart (adding it before gives 422 "not in Stasis" about one run in two).

Everything is released with the call (the context's teardown): media channel hung up,
bridge destroyed, transport closed. The transport is closed the moment the call is gone,
so a handler reading audio sees the stream end at once.

An attach that fails (an ARI error, the transport not connecting, the call ending, the
attaching caller cancelled) releases what it made before its error is raised, and the
next ``get()`` starts again from step 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid

from voxtra.ari.errors import AriError
from voxtra.calls.context import CallContext
from voxtra.config import MediaSettings
from voxtra.errors import MediaError
from voxtra.media.engine_transport import ENGINE_WIRE_FORMATS, EngineHub, EngineTransport
from voxtra.media.rtp_endpoint import RtpEndpoint
from voxtra.media.rtp_transport import RtpTransport
from voxtra.media.transport import MediaTransport
from voxtra.media.ws_transport import WebSocketMediaTransport

__all__ = ["CallMedia"]

logger = logging.getLogger(__name__)


class CallMedia:
    """Owns the bridge, the ExternalMedia channel and the transport of one call."""

    def __init__(
        self, context: CallContext, settings: MediaSettings, *, source: str | None = None
    ) -> None:
        self.context = context
        self.settings = settings
        self.source = source or context.id
        """The channel bridged with the ExternalMedia channel: the caller, or a snoop
        (one party of a three-party call, :mod:`voxtra.calls.parties`)."""
        self.transport: MediaTransport | None = None
        """Set once attached: the ExternalMedia channel is in the bridge with the source."""
        self.bridge_id: str | None = None
        self.channel_id: str | None = None
        self.steps: list[tuple[str, float]] = []
        """Attach steps done so far, with seconds since the start (slow attaches show where)."""
        self._attaching: asyncio.Future[MediaTransport] | None = None
        """The outcome of the attach running now, for the callers that wait on it."""
        self._opened: MediaTransport | None = None
        """The transport of the attach running now, until the attach succeeds."""
        self._watching = False
        self._closing: asyncio.Future[None] | None = None

    async def get(self) -> MediaTransport:
        """The call's transport, attached on first use (calls at once share one).

        Callers that come while an attach runs get its outcome: its transport, or its
        error. A failed attach leaves nothing behind, so the next call attaches anew."""
        while True:
            self.context.check_alive()
            if self.transport is not None:
                return self.transport
            pending = self._attaching
            if pending is None:
                return await self._attach_shared()
            # asyncio.wait, not await: it raises only if this caller is cancelled, so the
            # attaching caller's cancellation is told apart from this one's.
            await asyncio.wait((pending,))
            if pending.cancelled():
                # The attaching caller was cancelled (a say() under a timeout): nothing
                # failed, and this caller still wants audio: it attaches itself.
                continue
            try:
                return pending.result()
            except BaseException:
                # The attach's own error, in every waiter (not CallEnded on a live call).
                # Its traceback holds this frame: let go of the future that holds it,
                # or they are a reference cycle.
                del pending
                raise

    async def _attach_shared(self) -> MediaTransport:
        if not self._watching:
            self._watching = True
            self.context.add_cleanup("media", self.close)
            self.context.on_end(self._close_now)
        pending = self._attaching = asyncio.get_running_loop().create_future()
        try:
            transport = await self.attach()
        except BaseException as exc:
            self._attaching = None
            if isinstance(exc, Exception):
                pending.set_exception(exc)
                pending.exception()  # retrieved: there may be no waiter to take it
            else:
                pending.cancel()  # cancelled, not failed: a waiter attaches anew
            del pending  # as in get(): the traceback holds this frame
            raise
        self._attaching = None
        pending.set_result(transport)
        return transport

    def _close_now(self) -> None:
        # audio_stream() waits on the transport, not on events: close it the moment the
        # call is gone, so the stream ends and send_audio() raises CallEnded. Left open,
        # an echo handler sat in its loop until hangup_grace cancelled it (all 20 calls
        # of the Asterisk-kill fault test, and any caller hangup). close() awaits this.
        transport = self.transport
        if transport is not None and not transport.closed and self._closing is None:
            self._closing = asyncio.ensure_future(transport.close())

    async def attach(self) -> MediaTransport:
        """Bridge the source with a new ExternalMedia channel (the steps of the module
        docstring); :meth:`get` is the way in.

        All or nothing: if a step fails (or the call ends, or the caller is cancelled),
        what the attach made is released before its error goes on, and ``transport``,
        ``channel_id`` and ``bridge_id`` are None again. (The media used to be marked
        attached before this ran: after one failure, the next get() gave a transport
        whose channel was never bridged, no audio and no error, or CallEnded on a live
        call.)"""
        try:
            transport = await self._attach()
        except BaseException:
            await self._undo()
            raise
        self._opened = None
        self.transport = transport
        if self.context.ended_event.is_set():
            # The call ended as the last step was answered: the on-end hook found no
            # transport to close then.
            self._close_now()
        return transport

    async def _attach(self) -> MediaTransport:
        context, host = self.context, self.context.host
        settings = self.settings
        if settings.transport == "rtp" and settings.codec == "slin16":
            raise MediaError(
                "slin16 over RTP is not offered: Asterisk 22 plays what it receives as "
                "silence. Use media.transport='websocket' for 16 kHz audio."
            )
        loop = asyncio.get_running_loop()
        begun = loop.time()
        self.steps = []

        def step(name: str) -> None:
            self.steps.append((name, round(loop.time() - begun, 3)))

        self.bridge_id = await context.create_bridge("media")
        await context.request(context.ari.bridges.add_channel(self.bridge_id, self.source))
        step("caller bridged")
        channel_id = host.internal_id("media")
        started = context.expect_channel(channel_id)
        self.channel_id = channel_id
        transport: MediaTransport
        if settings.transport == "rtp":
            rtp = await self._open_rtp()
            self._opened = rtp
            channel = await context.ari.channels.external_media(
                host.app_name,
                external_host=rtp.advertised_address,
                format=settings.codec,
                channel_id=channel_id,
            )
            variables = channel.channelvars or {}
            rtp_host = variables.get("UNICASTRTP_LOCAL_ADDRESS")
            rtp_port = variables.get("UNICASTRTP_LOCAL_PORT")
            if rtp_host and rtp_port:
                rtp.set_remote(rtp_host, int(rtp_port))
            else:
                # Without Asterisk's address nothing would be read (the transport does
                # not let a stranger's packet pick the peer): fall back to the first
                # valid sender, and say so.
                logger.warning(
                    "call %s: ExternalMedia gave no UNICASTRTP address; taking RTP from "
                    "the first valid sender",
                    context.id,
                )
                rtp.learn_remote = True
            transport = rtp
        elif settings.transport == "websocket":
            channel = await context.ari.channels.external_media(
                host.app_name,
                external_host="",
                format=settings.codec,
                encapsulation="none",
                transport="websocket",
                connection_type="server",
                channel_id=channel_id,
            )
            connection = (channel.channelvars or {}).get("MEDIA_WEBSOCKET_CONNECTION_ID")
            if not connection:
                raise MediaError("Asterisk gave no MEDIA_WEBSOCKET_CONNECTION_ID")
            transport = self._opened = await WebSocketMediaTransport.connect(
                context.ari.base_url,
                connection,
                username=context.ari.username,
                password=context.ari.password,
                wire_format=settings.codec,
            )
        else:
            server = await host.audiosocket_server()
            # Registered before Asterisk hears of it: the server takes only expected
            # UUIDs, each once, and refuses every other connection.
            call_uuid = server.expect(uuid.uuid4())
            try:
                await context.ari.channels.external_media(
                    host.app_name,
                    external_host=server.advertised_address,
                    format="slin",
                    encapsulation="audiosocket",
                    transport="tcp",
                    channel_id=channel_id,
                    data=str(call_uuid),
                )
            except BaseException:
                server.forget(call_uuid)
                raise
            step("external media created")
            transport = self._opened = await server.accept(call_uuid, timeout=10.0)
        step("transport connected")
        await context.wait_channel(channel_id, started)
        step("media channel in Stasis")
        await context.request(context.ari.bridges.add_channel(self.bridge_id, channel_id))
        step("media channel bridged")
        logger.debug("call %s: %s media attached: %s", context.id, settings.transport, self.steps)
        return transport

    async def _undo(self) -> None:
        """Release what a failed attach made. The transport first: it takes no request,
        so it is closed (its engine row or endpoint place freed) even if the requests
        below are cut short; the channel and bridge are the context's until released,
        so its teardown releases what they leave."""
        context = self.context
        transport, self._opened = self._opened, None
        channel_id, self.channel_id = self.channel_id, None
        bridge_id, self.bridge_id = self.bridge_id, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()
        # Hung up even if the request creating it failed: a request that timed out may
        # have been done (a 404 for one that was not is not an error).
        releases = [(channel_id, context.release_channel), (bridge_id, context.release_bridge)]
        for resource, release in releases:
            if resource is None:
                continue
            try:
                await release(resource)
            except AriError as exc:
                logger.warning(
                    "call %s: releasing %s of a failed media attach failed: %s",
                    context.id,
                    resource,
                    exc,
                )

    async def _open_rtp(self) -> RtpTransport | EngineTransport:
        # Every call's RTP goes through one socket of the app (bound to a port of
        # port_range on first use), demultiplexed by Asterisk's per-channel source
        # address: a tick is read with one recvmmsg and sent with one sendmmsg
        # (issue 15; voxtra/media/rtp_endpoint.py has the figures).
        low, high = self.settings.port_range
        ports = list(range(low, high + 1))
        if self.settings.engine and self.settings.codec in ENGINE_WIRE_FORMATS:
            # media.engine: the call is a row of the app's MediaEngine (arrays per
            # tick; voxtra/media/engine_transport.py). A full engine: per-call path.
            hub = EngineHub.shared(
                self.context.host.ticker,
                self.settings.bind_host,
                ports,
                advertised_host=self.settings.advertise_host,
            )
            if not hub.full:
                return hub.open(self.settings.codec, name=f"rtp:{self.context.id}")
        start = random.randrange(len(ports))
        endpoint = RtpEndpoint.shared(
            self.context.host.ticker,
            self.settings.bind_host,
            tuple(ports[start:] + ports[:start]),
            advertised_host=self.settings.advertise_host,
        )
        return await RtpTransport.open(
            self.settings.codec,
            endpoint=endpoint,
            advertised_host=self.settings.advertise_host,
            name=f"rtp:{self.context.id}",
        )

    async def close(self) -> None:
        """Close the transport and hang up the media channel (the bridge is the
        context's: destroyed with the call's other bridges)."""
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await self._closing
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()
        if self.channel_id is not None:
            with contextlib.suppress(AriError):
                await self.context.release_channel(self.channel_id)
