"""A Twilio-only app: :class:`NoAsterisk`, the ARI transport of an app without Asterisk.

A :class:`~voxtra.VoxtraApp` connects to ARI when it starts (its event stream, its
reconcile, its recording delivery). An app whose calls all come through Twilio has no
Asterisk to connect to: ``app.use_transport(NoAsterisk())`` (or
``twilio.without_asterisk: true`` for ``voxtra serve``) gives it an empty one. Asterisk
reports nothing (no channels, bridges or stored recordings), the event stream stays
open and silent, and any other request is answered 404 "no Asterisk" (nothing on a
Twilio call sends one: its control is :class:`~voxtra.twilio.control.TwilioCallControl`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from voxtra.ari.transport import AriRequest, AriResponse, AriTransport, EventConnection

__all__ = ["NoAsterisk"]

_EMPTY_LISTS = ("/channels", "/bridges", "/recordings/stored", "/endpoints", "/applications")


def _application(name: str) -> dict[str, object]:
    """ARI's Application model for ``name``: registered, with nothing in it."""
    return {
        "name": name,
        "channel_ids": [],
        "bridge_ids": [],
        "endpoint_ids": [],
        "device_names": [],
    }


class _Silent(EventConnection):
    """An events connection on which nothing ever happens, until it is closed."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        await self._closed.wait()
        return
        yield  # an async generator that yields nothing

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def close(self) -> None:
        self._closed.set()


class NoAsterisk(AriTransport):
    """The ARI transport of a Twilio-only app (see the module docstring)."""

    base_url = "http://no-asterisk.invalid"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._connections: list[_Silent] = []

    async def handle_request(self, request: AriRequest) -> AriResponse:
        self.requests.append((request.method, request.path))
        if request.method == "GET" and request.path == "/asterisk/info":
            return AriResponse(200, b"{}")
        if request.method == "GET" and request.path in _EMPTY_LISTS:
            return AriResponse(200, b"[]")
        if request.method == "GET" and request.path.startswith("/applications/"):
            # The event stream checks that its Stasis app is registered: it is, here.
            name = request.path.removeprefix("/applications/")
            return AriResponse(200, json.dumps(_application(name)).encode())
        if (
            request.method == "PUT"
            and request.path.startswith("/applications/")
            and request.path.endswith("/eventFilter")
        ):
            # The app asks every Asterisk not to send it the kinds it ignores; with no
            # events at all that holds already (answered, not logged as a failure).
            name = request.path.removeprefix("/applications/").removesuffix("/eventFilter")
            return AriResponse(200, json.dumps(_application(name)).encode())
        body = json.dumps({"message": "no Asterisk: this app runs on Twilio only"})
        return AriResponse(404, body.encode(), "Not Found")

    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        connection = _Silent()
        self._connections.append(connection)
        return connection

    async def aclose(self) -> None:
        for connection in self._connections:
            await connection.close()
        self._connections.clear()
