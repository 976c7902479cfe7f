"""Names, ids and URLs as users write them, against the real Asterisk sandbox.

Ids, variables and Stasis app names with characters that mean something in a URL
('/', '?', '#', '%', '&', '+', a space, non-ASCII) must reach Asterisk as they were
written; a base URL written with ``user:password@`` must neither fail nor log them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from voxtra.ari.aiohttp_transport import AiohttpTransport
from voxtra.ari.client import AriClient, basic_auth_header
from voxtra.ari.errors import AriNotFound
from voxtra.ari.events import AriEvent, StasisStart
from voxtra.ari.stream import AriEventStream
from voxtra.testing.pytest_plugin import AsteriskTarget

from .scripted import until

pytestmark = pytest.mark.asterisk

ODD = ["a/b", "a?b", "a#b", "a%b", "a%2Fb", "a b", "é-ü", "a+b", "a&b=c", "a;b"]


@asynccontextmanager
async def _stream(ari: AriClient, apps: list[str], got: list[AriEvent]) -> AsyncIterator[None]:
    stream = AriEventStream(ari, apps, on_event=got.append, registration_timeout=2.0)
    task = asyncio.create_task(stream.run())
    try:
        await stream.wait_connected(10)
        yield
    finally:
        await stream.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextmanager
def _no_secret_logged(caplog: pytest.LogCaptureFixture, asterisk: AsteriskTarget) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    token = base64.b64encode(f"{asterisk.username}:{asterisk.password}".encode()).decode()
    assert f"{asterisk.username}:{asterisk.password}@" not in caplog.text
    assert token not in caplog.text


async def test_a_base_url_with_user_and_password_works_and_logs_neither(
    asterisk: AsteriskTarget, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: aiohttp refused the URL beside the Authorization header with a bare
    # ValueError, which ended the event stream's task (and every aiohttp request).
    parts = urlsplit(asterisk.ari_url)
    netloc = f"{asterisk.username}:{asterisk.password}@{parts.netloc}"
    url = urlunsplit(parts._replace(netloc=netloc))
    app = f"voxtra-userinfo-{uuid.uuid4().hex[:8]}"
    with _no_secret_logged(caplog, asterisk):
        async with AriClient(url, asterisk.username, asterisk.password, timeout=5) as ari:
            assert (await ari.asterisk.ping()).ping == "pong"
            async with _stream(ari, [app], []):
                assert (await ari.applications.get(app)).name == app
            assert ari.base_url == asterisk.ari_url.rstrip("/")
        auth = basic_auth_header(asterisk.username, asterisk.password)
        plain = AiohttpTransport(url, auth, timeout=5, lean_rest=False)
        async with AriClient(url, "", "", transport=plain) as ari:
            assert (await ari.asterisk.ping()).ping == "pong"
        await plain.aclose()
    assert "ARI events connected to " + asterisk.ari_url.rstrip("/") in caplog.text


async def test_stasis_app_names_with_url_characters_register_as_written(
    ari: AriClient,
) -> None:
    # Before: the events URL carried the names unencoded; "a&b" registered "a", "a#b"
    # registered "a" and "a+b" registered "a b", and the stream reconnected for ever
    # waiting for the registration it asked for.
    base = f"voxtra-name-{uuid.uuid4().hex[:8]}-"
    apps = [base + suffix for suffix in ("a&b", "a#b", "a+b", "a b", "é", "a%b", "a/b", "a?b")]
    async with _stream(ari, apps, []):
        for app in apps:
            assert (await ari.applications.get(app)).name == app
    with pytest.raises(AriNotFound):  # only the names asked for were registered
        await ari.applications.get(base + "a")


@pytest.mark.parametrize("lean_rest", [True, False], ids=["lean", "aiohttp"])
async def test_channel_ids_and_variables_with_url_characters_round_trip(
    asterisk: AsteriskTarget, lean_rest: bool
) -> None:
    auth = basic_auth_header(asterisk.username, asterisk.password)
    transport = AiohttpTransport(asterisk.ari_url, auth, timeout=5, lean_rest=lean_rest)
    ari = AriClient(asterisk.ari_url, asterisk.username, asterisk.password, transport=transport)
    app = f"voxtra-ids-{uuid.uuid4().hex[:8]}"
    got: list[AriEvent] = []
    try:
        async with _stream(ari, [app], got):
            for odd in ODD:
                channel_id = f"t-{uuid.uuid4().hex[:6]}{odd}"
                await ari.channels.originate(
                    "Local/answer@voxtra-test",
                    app=app,
                    channel_id=channel_id,
                    other_channel_id=channel_id + "-2",
                )
                await until(
                    lambda cid=channel_id: any(
                        isinstance(e, StasisStart) and e.channel.id == cid for e in got
                    ),
                    10,
                )
                assert (await ari.channels.get(channel_id)).id == channel_id
                name = "VOXTRA_" + odd.replace("/", "_")
                await ari.channels.set_variable(channel_id, name, "v" + odd)
                assert await ari.channels.get_variable(channel_id, name) == "v" + odd
                global_name = f"VOXTRA_REVIEW_{uuid.uuid4().hex[:6]}"
                await ari.asterisk.set_variable(global_name, "v" + odd)
                assert await ari.asterisk.get_variable(global_name) == "v" + odd
                await ari.channels.hangup(channel_id)
    finally:
        await transport.aclose()
