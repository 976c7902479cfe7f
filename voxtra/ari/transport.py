"""The seam between the ARI client and the wire: request/response plus an event source.

:class:`~voxtra.ari.client.AriClient` and :class:`~voxtra.ari.stream.AriEventStream`
talk only to an :class:`AriTransport`, as httpx's client talks to its
``AsyncBaseTransport``. :class:`~voxtra.ari.aiohttp_transport.AiohttpTransport` is the
real one (HTTP and a WebSocket to Asterisk); :class:`voxtra.testing.FakeAsterisk` is an
in-process one that keeps Asterisk's state itself, so an app and its handlers run in a
unit test without Asterisk.

The contract, which every transport keeps:

- :meth:`AriTransport.handle_request` sends one REST request and returns the answer
  as it came (status, body); it never raises for an HTTP status (the client maps
  statuses to :mod:`voxtra.ari.errors`). It raises
  :class:`~voxtra.ari.errors.AriConnectionError` when no answer came at all (refused,
  reset, timed out).
- :meth:`AriTransport.connect_events` opens the events WebSocket for some Stasis apps.
  It raises :class:`~voxtra.ari.errors.AriUnauthorized` when the credentials are
  refused (401/403), :class:`~voxtra.ari.errors.AriConnectionError` when Asterisk
  cannot be reached or refuses the upgrade for another reason.
- :meth:`AriTransport.handle_download` (optional) is ``handle_request`` for a large
  body: on a status below 400 the body goes to a ``write`` callable chunk by chunk as
  it arrives, instead of into memory. The default reads it whole and writes it once,
  which is right for an in-process transport.
- An :class:`EventConnection` yields each event's JSON text as it arrives and ends
  when the connection closes, from either side. ``close()`` is idempotent.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["AriRequest", "AriResponse", "AriTransport", "EventConnection", "without_userinfo"]


def without_userinfo(url: str) -> str:
    """``url`` less any ``user:password@`` (the credentials go in the Authorization
    header). Kept in a base URL, aiohttp refused it beside that header with a bare
    ValueError (the event stream's task ended with it, and every aiohttp request and
    media WebSocket failed so), and the password rode in ``base_url``, which log lines
    name ("ARI events connected to ...", "cannot reach ARI events at ...")."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class AriRequest:
    """One REST request: ``path`` is below ``/ari`` (``/channels/abc/answer``)."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    """Query parameters, already encoded as strings (lists joined with commas)."""
    json: Any = None
    """The JSON body (``None``: no body)."""


@dataclass(frozen=True, slots=True)
class AriResponse:
    """What Asterisk answered: the status and the undecoded body."""

    status: int
    body: bytes = b""
    reason: str = ""
    """The HTTP reason phrase ("Not Found"), used when the body says nothing."""


class EventConnection(abc.ABC):
    """One open events connection: iterate it for each event's JSON text."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Each message as it arrives; ends when the connection closes."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the connection is closed, by either side."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (idempotent): the iteration ends."""


class AriTransport(abc.ABC):
    """How the ARI client reaches Asterisk (see the module doc for the contract)."""

    base_url: str = ""
    """Asterisk's HTTP server (``http://host:8088``), for media WebSockets and logs."""

    @abc.abstractmethod
    async def handle_request(self, request: AriRequest) -> AriResponse:
        """Send one request and return the answer, whatever its status."""

    @abc.abstractmethod
    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        """Open the events connection for ``apps``; ``heartbeat``: seconds between
        pings, so a dead peer is noticed within ``1.5 * heartbeat``."""

    async def handle_download(
        self,
        request: AriRequest,
        write: Callable[[bytes], object],
        *,
        chunk_size: int = 1 << 16,
        read_timeout: float | None = None,
    ) -> AriResponse:
        """Send one request whose answer may be large (a recording's file).

        Status below 400: the body is handed to ``write`` (in chunks of at most
        ``chunk_size`` bytes) and the returned response's body is empty. Otherwise
        nothing is written and the body is returned as :meth:`handle_request` does.
        Raises :class:`~voxtra.ari.errors.AriConnectionError` when no answer came,
        when no data came for ``read_timeout`` seconds (default: the transport's own
        timeout) or when the body ended short of its announced length; an exception
        raised by ``write`` propagates.
        """
        response = await self.handle_request(request)
        if response.status >= 400:
            return response
        for start in range(0, len(response.body), chunk_size):
            write(response.body[start : start + chunk_size])
        return AriResponse(response.status, b"", response.reason)

    async def aclose(self) -> None:  # noqa: B027 - optional: not every transport holds resources
        """Release what the transport holds (sockets, sessions). Idempotent."""
