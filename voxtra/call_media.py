"""A call's audio path: the caller and an ExternalMedia channel in one mixing bridge.

Created on first use of audio (or at answer when ``media.attach_on_answer`` is set):

1. a mixing bridge is created and the caller added;
2. the transport is opened (RTP socket, chan_websocket connection, AudioSocket);
3. the ExternalMedia channel is created, and added to the bridge only after its own
   StasisStart (adding it before gives 422 "not in Stasis" about one run in two).

Everything is released with the call: media channel hung up, bridge destroyed,
transport closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from typing import TYPE_CHECKING

from voxtra.ari.errors import AriError
from voxtra.config import MediaSettings
from voxtra.errors import MediaError
from voxtra.media.rtp_transport import RtpTransport
from voxtra.media.transport import MediaTransport

if TYPE_CHECKING:
    from voxtra.call import CallSession

__all__ = ["CallMedia"]

logger = logging.getLogger(__name__)


class CallMedia:
    """Owns the bridge, the ExternalMedia channel and the transport of one call."""

    def __init__(self, session: CallSession, settings: MediaSettings) -> None:
        self.session = session
        self.settings = settings
        self.transport: MediaTransport | None = None
        self.bridge_id: str | None = None
        self.channel_id: str | None = None
        self.steps: list[tuple[str, float]] = []
        """Attach steps done so far, with seconds since the start (slow attaches show where)."""

    async def attach(self) -> MediaTransport:
        session, app = self.session, self.session.app
        settings = self.settings
        if settings.transport == "rtp" and settings.codec == "slin16":
            raise MediaError(
                "slin16 over RTP is not offered: Asterisk 22 plays what it receives as "
                "silence. Use media.transport='websocket' for 16 kHz audio."
            )
        loop = asyncio.get_running_loop()
        begun = loop.time()

        def step(name: str) -> None:
            self.steps.append((name, round(loop.time() - begun, 3)))

        self.bridge_id = await session._create_bridge("media")
        await session._ari(app.ari.bridges.add_channel(self.bridge_id, session.id))
        step("caller bridged")
        channel_id = app.internal_id("media")
        started = app.expect_internal(channel_id, session)
        self.channel_id = channel_id
        if settings.transport == "rtp":
            transport = await self._open_rtp()
            try:
                channel = await app.ari.channels.external_media(
                    app.app_name,
                    external_host=transport.advertised_address,
                    format=settings.codec,
                    channel_id=channel_id,
                )
            except BaseException:
                await transport.close()
                raise
            self.transport = transport
            variables = channel.channelvars or {}
            host = variables.get("UNICASTRTP_LOCAL_ADDRESS")
            port = variables.get("UNICASTRTP_LOCAL_PORT")
            if host and port:
                transport.set_remote(host, int(port))
            else:
                # Without Asterisk's address nothing would be read (the transport does
                # not let a stranger's packet pick the peer): fall back to the first
                # valid sender, and say so.
                logger.warning(
                    "call %s: ExternalMedia gave no UNICASTRTP address; taking RTP from "
                    "the first valid sender",
                    session.id,
                )
                transport.learn_remote = True
        elif settings.transport == "websocket":
            from voxtra.media.ws_transport import WebSocketMediaTransport

            channel = await app.ari.channels.external_media(
                app.app_name,
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
            self.transport = await WebSocketMediaTransport.connect(
                app.ari.base_url,
                connection,
                username=app.ari.username,
                password=app.ari.password,
                wire_format=settings.codec,
            )
        else:
            server = await app._audiosocket_server()
            # Registered before Asterisk hears of it: the server takes only expected
            # UUIDs, each once, and refuses every other connection.
            call_uuid = server.expect(uuid.uuid4())
            try:
                await app.ari.channels.external_media(
                    app.app_name,
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
            self.transport = await server.accept(call_uuid, timeout=10.0)
        step("transport connected")
        await app.wait_internal(channel_id, started)
        step("media channel in Stasis")
        await session._ari(app.ari.bridges.add_channel(self.bridge_id, channel_id))
        step("media channel bridged")
        logger.debug("call %s: %s media attached: %s", session.id, settings.transport, self.steps)
        return self.transport

    async def _open_rtp(self) -> RtpTransport:
        low, high = self.settings.port_range
        ports = list(range(low, high + 1))
        start = random.randrange(len(ports))
        last: Exception | None = None
        for port in ports[start:] + ports[:start]:
            try:
                return await RtpTransport.open(
                    self.settings.codec,
                    bind_host=self.settings.bind_host,
                    bind_port=port,
                    advertised_host=self.settings.advertise_host,
                    ticker=self.session.app.ticker,
                    name=f"rtp:{self.session.id}",
                )
            except MediaError as exc:
                last = exc
        raise MediaError(f"no free RTP port in {low}-{high}: {last}")

    async def close(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()
        app = self.session.app
        if self.channel_id is not None:
            with contextlib.suppress(AriError):
                await app.ari.channels.hangup(self.channel_id)
            app._forget_internal(self.channel_id)
            self.session._channels.discard(self.channel_id)
