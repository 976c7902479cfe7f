"""What a call needs from the app that runs it, as a protocol.

:class:`~voxtra.app.VoxtraApp` implements it; the call kernel and its features are
typed against it and never import the app (imports point one way: app -> calls).
A unit test can implement it with plain attributes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from voxtra.ari.client import AriClient
from voxtra.calls.registry import CallRegistry
from voxtra.config import VoxtraSettings
from voxtra.media.audiosocket_transport import AudioSocketServer
from voxtra.media.pacer import Ticker
from voxtra.recording.app_recordings import AppRecordings

__all__ = ["CallHost"]

T = TypeVar("T")


class CallHost(Protocol):
    """The app's services a call uses."""

    app_name: str
    """The Stasis app the call is in."""
    settings: VoxtraSettings
    ari: AriClient
    ticker: Ticker
    """The one 20 ms pacing clock every call's outbound media shares."""

    @property
    def registry(self) -> CallRegistry[Any]:
        """Who owns which channel and bridge (the app's event routing)."""

    @property
    def recordings(self) -> AppRecordings | None:
        """Recording delivery (spool and sinks); None before the app started."""

    def internal_id(self, kind: str) -> str:
        """A new id for a channel or bridge, marked with the app's instance."""

    def events_generation(self) -> int:
        """The ARI events connection's generation now (0 before the first)."""

    async def wait_reconciled(self, since: int, ended: asyncio.Event | None = None) -> bool:
        """After a request at generation ``since`` could not reach Asterisk: wait until
        a later connection was reconciled (or ``ended`` is set). False if it was not,
        or if ARI answers at once (a one-off failure, not an outage)."""

    async def retry_after_outage(self, request: Callable[[], Awaitable[T]]) -> T:
        """Send an idempotent request; if Asterisk was unreachable, once more after the
        events reconnected."""

    async def audiosocket_server(self) -> AudioSocketServer:
        """The app's AudioSocket listener (started on first use)."""
