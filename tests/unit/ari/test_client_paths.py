"""Ids and names become exactly one ARI URL segment, or nothing is sent at all.

Issue 16: ``_seg`` let ``..`` through, so ``hangup("..")`` sent ``DELETE /ari/`` (URL
resolution removes dot segments): an operation on something other than the channel
named. A real HTTP server records what actually arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriInvalidId, AriNotFound
from voxtra.errors import VoxtraError


class RecordingServer:
    """Answers 404 to everything and records each request's method and raw path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(self.app)
        self.url = ""

    async def _any(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.raw_path))
        return web.json_response({"message": "not found"}, status=404)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    srv = RecordingServer()
    await srv.start()
    yield srv
    await srv.runner.cleanup()


Call = Callable[[AriClient, str], Awaitable[Any]]

CALLS: list[tuple[str, Call]] = [
    ("hangup", lambda ari, v: ari.channels.hangup(v)),
    ("answer", lambda ari, v: ari.channels.answer(v)),
    ("get channel", lambda ari, v: ari.channels.get(v)),
    ("destroy bridge", lambda ari, v: ari.bridges.destroy(v)),
    ("add to bridge", lambda ari, v: ari.bridges.add_channel(v, ["c1"])),
    ("stop playback", lambda ari, v: ari.playbacks.stop(v)),
    ("delete stored recording", lambda ari, v: ari.recordings.delete_stored(v)),
    ("stop live recording", lambda ari, v: ari.recordings.stop(v)),
    ("application", lambda ari, v: ari.applications.get(v)),
]


@pytest.mark.parametrize("value", ["..", ".", "", "...", "...."])
@pytest.mark.parametrize(("what", "call"), CALLS, ids=[c[0] for c in CALLS])
async def test_dot_only_and_empty_ids_are_refused_before_sending(
    server: RecordingServer, value: str, what: str, call: Call
) -> None:
    async with AriClient(server.url, "u", "p") as ari:
        with pytest.raises(AriInvalidId) as info:
            await call(ari, value)
    assert isinstance(info.value, VoxtraError) and isinstance(info.value, ValueError)
    assert repr(value) in str(info.value)
    assert server.requests == []  # nothing reached the server


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("1700000000.42", "1700000000.42"),  # Asterisk's own channel ids hold dots
        (".hidden", ".hidden"),
        ("a..b", "a..b"),
        ("../x", "..%2Fx"),  # one segment: the slash is encoded
        ("a/../../b", "a%2F..%2F..%2Fb"),
        ("x;y?z#w", "x%3By%3Fz%23w"),  # sent as quoted (aiohttp's yarl left ";" as is)
    ],
)
async def test_other_ids_stay_one_segment(
    server: RecordingServer, value: str, segment: str
) -> None:
    async with AriClient(server.url, "u", "p") as ari:
        with pytest.raises(AriNotFound):
            await ari.channels.hangup(value)
    assert server.requests == [("DELETE", f"/ari/channels/{segment}")]
