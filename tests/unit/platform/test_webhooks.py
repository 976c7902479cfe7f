"""Webhooks: HMAC-SHA256 signature with a timestamp, retries with backoff against a real
HTTP receiver on 127.0.0.1, a dead receiver never blocks calls, the secret never logged,
and the app's calls reported through the platform."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from platform_helpers import WRITE, Running, auth

from voxtra.platform.engine import service
from voxtra.platform.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookDispatcher,
    sign,
    verify,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SECRET = "whsec-test-0123456789abcdef"


def test_a_signature_verifies_and_a_changed_body_old_timestamp_or_key_does_not() -> None:
    body = b'{"type":"call.ended"}'
    now = 1_800_000_000
    signature = sign(SECRET, now, body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify(SECRET, body, str(now), signature, now=now + 10)
    assert not verify(SECRET, body + b" ", str(now), signature, now=now)
    assert not verify("other-secret", body, str(now), signature, now=now)
    assert not verify(SECRET, body, str(now), signature, now=now + 301)  # a replay, later
    assert not verify(SECRET, body, str(now + 1), signature, now=now)  # timestamp is signed
    assert not verify(SECRET, body, None, signature)
    assert not verify(SECRET, body, "abc", signature)
    # a rotated secret: the header may carry several signatures, any one matches
    assert verify(SECRET, body, str(now), f"v1=00ff,{signature}", now=now)


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    """Statuses to answer, in order (then 200)."""


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        got.received.append((dict(request.headers), await request.read()))
        status = got.answers.pop(0) if got.answers else 200
        return web.Response(status=status)

    server = web.Application()
    server.router.add_post("/hook", handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    got.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield got
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_failed_delivery_is_retried_and_each_try_is_signed(receiver: Receiver) -> None:
    receiver.answers = [500, 503]
    results: list[tuple[str, str]] = []
    hooks = WebhookDispatcher(
        SECRET, first_delay=0.05, observe=lambda event, result: results.append((event, result))
    )
    await hooks.start()
    try:
        hooks.notify("campaign.finished", {"campaign_id": "camp_1"}, [receiver.url])
        await wait_for(lambda: hooks.delivered == 1)
    finally:
        await hooks.stop()
    assert len(receiver.received) == 3
    assert [r for _, r in results] == ["retried", "retried", "delivered"]
    for headers, body in receiver.received:
        assert verify(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
        assert headers["Voxtra-Event"] == "campaign.finished"
    event = json.loads(receiver.received[-1][1])
    assert event["type"] == "campaign.finished"
    assert event["data"] == {"campaign_id": "camp_1"}
    assert event["id"].startswith("evt_")


async def test_a_dead_receiver_never_blocks_and_the_secret_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = f"http://127.0.0.1:{closed_port()}/hook?token=receiver-own-token"
    hooks = WebhookDispatcher(SECRET, first_delay=0.01, attempts=3, max_queue=5)
    await hooks.start()
    try:
        started = time.monotonic()
        for i in range(50):
            hooks.notify("call.ended", {"n": i}, [dead])
        # notify only queued: 50 events into a queue of 5, the oldest dropped and counted
        assert time.monotonic() - started < 1.0
        assert hooks.dropped >= 40
        await wait_for(lambda: hooks.failed >= 1)
    finally:
        await hooks.stop(timeout=0.1)
    assert SECRET not in caplog.text
    assert "receiver-own-token" not in caplog.text
    # nothing but http(s) to a named host is ever queued
    fresh = WebhookDispatcher(SECRET)
    for bad in ("file:///etc/passwd", "gopher://x/", "http:///nohost", "not a url"):
        fresh.notify("call.ended", {}, [bad])
    assert fresh.pending == 0
    fresh.notify("call.ended", {}, ["https://receiver.example/hook"])
    assert fresh.pending == 1
    assert SECRET not in repr(hooks)
    assert "gave up" in caplog.text


async def test_a_receiver_refusing_at_once_keeps_its_retries_within_max_queue(
    receiver: Receiver,
) -> None:
    # Before, a retry waited its backoff outside the queue: a receiver answering 503 at
    # once let the senders empty the queue between events, and all 50 were held in
    # memory waiting, none dropped (max_queue 5).
    receiver.answers = [503] * 100
    hooks = WebhookDispatcher(SECRET, first_delay=60.0, attempts=3, max_queue=5, senders=1)
    await hooks.start()
    try:
        for i in range(50):
            hooks.notify("call.ended", {"n": i}, [receiver.url])
            await wait_for(lambda n=i + 1: len(receiver.received) == n)
            assert hooks.pending <= 5
        assert hooks.dropped == 45
        assert hooks.waiting == hooks.pending == 5
    finally:
        await hooks.stop(timeout=0.1)
    assert hooks.pending == 0


async def test_a_url_aiohttp_cannot_send_to_ends_its_delivery_not_the_sender(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # An empty label fails IDNA encoding with a UnicodeError, which escaped the sender
    # and ended its task: with every sender gone, no webhook was delivered any more.
    hooks = WebhookDispatcher(SECRET, first_delay=0.01, senders=1)
    await hooks.start()
    try:
        for url in ("http://a..b/hook", "http://example.com:99999/hook"):
            hooks.notify("call.ended", {}, [url])
        hooks.notify("call.ended", {}, [receiver.url])
        await wait_for(lambda: hooks.delivered == 1)
        assert hooks.failed == 2  # given up at once: they fail the same way every time
    finally:
        await hooks.stop()
    assert len(receiver.received) == 1


class Rebinding(AbstractResolver):
    """DNS whose every name answers 127.0.0.1: a client's host name that passed the
    API's check (names are not resolved there), then rebound to a private address."""

    def __init__(self, *args: object, **kwargs: object) -> None:  # aiohttp passes loop=
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


async def test_a_clients_host_name_resolving_to_a_private_address_is_not_connected_to(
    receiver: Receiver,
) -> None:
    # Before, the check held for what a URL said only: a name resolving to 127.0.0.1
    # (or the cloud's 169.254.169.254) when the event was sent was POSTed to.
    port = receiver.url.split(":")[2].split("/")[0]
    named = f"http://hooks.rebind.test:{port}/hook"
    dns = Rebinding()
    hooks = WebhookDispatcher(
        SECRET,
        first_delay=0.01,
        attempts=2,
        private_hosts=[],
        trusted=[receiver.url],
        resolver=dns,
    )
    await hooks.start()
    try:
        hooks.notify("call.ended", {"to": "client"}, [named])
        await wait_for(lambda: hooks.failed == 1)
        assert dns.asked and receiver.received == []
        # A private literal not the operator's own is refused before any connection.
        hooks.notify("call.ended", {"to": "literal"}, [receiver.url.replace("127.0.0.1", "[::1]")])
        await wait_for(lambda: hooks.failed == 2)
        # The operator's own URL (trusted) is not held to the check.
        hooks.notify("call.ended", {"to": "operator"}, [receiver.url])
        await wait_for(lambda: hooks.delivered == 1)
    finally:
        await hooks.stop()
    assert [json.loads(body)["data"] for _, body in receiver.received] == [{"to": "operator"}]

    # A private address the operator allows is reached through a name too.
    allowed = WebhookDispatcher(SECRET, private_hosts=["127.0.0.0/8"], resolver=Rebinding())
    await allowed.start()
    try:
        allowed.notify("call.ended", {"to": "allowed"}, [named])
        await wait_for(lambda: allowed.delivered == 1)
    finally:
        await allowed.stop()


async def test_the_apps_calls_are_reported_to_its_webhook(
    running: Callable[..., Any], receiver: Receiver
) -> None:
    rig: Running = await running(platform={"webhook_url": receiver.url, "webhook_secret": SECRET})
    call = await rig.fake.incoming(extension="1000", caller="+4930123")
    await call.wait_answered()
    await call.hang_up()
    await wait_for(lambda: len(receiver.received) >= 2)
    # several senders deliver at once: events may arrive in any order (each has its
    # created_at)
    events = {json.loads(body)["type"]: json.loads(body) for _, body in receiver.received}
    assert {"call.started", "call.ended"} <= set(events)
    for headers, body in receiver.received:
        assert verify(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    ended = events["call.ended"]["data"]
    assert ended["direction"] == "inbound" and ended["caller"] == "+4930123"
    assert ended["call_id"].startswith("call_")
    assert service.dispatcher_of(rig.platform).delivered >= 2
    metrics = (await rig.client.get("/metrics")).text
    assert 'voxtra_webhook_deliveries_total{event="call.ended",result="delivered"} 1.0' in metrics


async def test_a_call_placed_with_its_own_webhook_url_is_reported_there(
    running: Callable[..., Any], receiver: Receiver
) -> None:
    # The receiver is on loopback: allowed by the operator, as any private host must be.
    rig: Running = await running(
        platform={"webhook_secret": SECRET, "webhook_private_hosts": ["127.0.0.1"]}
    )
    placed = await rig.client.post(
        "/v1/calls",
        json={"to": "PJSIP/bob", "route": "hello", "metadata": {"webhook_url": receiver.url}},
        headers=auth(WRITE),
    )
    assert placed.status_code == 201, placed.text
    await rig.fake.wait_until(lambda: bool(rig.handled), timeout=5)
    await rig.fake.originated[-1].hang_up()
    await wait_for(lambda: len(receiver.received) >= 3)
    events = {json.loads(body)["type"]: json.loads(body) for _, body in receiver.received}
    assert {"call.started", "call.answered", "call.ended"} <= set(events)
    assert events["call.ended"]["data"]["call_id"] == placed.json()["call_id"]


PRIVATE_HOOKS = [
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
    "http://[::1]/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.7:8080/hook",
    "http://169.254.169.254/latest/meta-data",  # a cloud's instance metadata
    "http://[fd00::1]/hook",
    "http://0.0.0.0/hook",
    # Loopback written otherwise: each passed the check as a host name, and aiohttp
    # reached 127.0.0.1 through 0x7f000001.
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://127.1/hook",
    "http://localhost./hook",
    "http://127.0.0.1./hook",
]


@pytest.mark.parametrize("url", PRIVATE_HOOKS)
async def test_a_client_given_webhook_on_a_private_host_is_refused(
    running: Callable[..., Any], url: str
) -> None:
    # Before, a client's webhook URL was only scheme-checked (a call's metadata one not
    # at all): the platform would POST its events to any host its own network reaches.
    rig: Running = await running()
    bodies = {
        "/v1/calls": (
            {"to": "PJSIP/bob", "route": "hello", "metadata": {"webhook_url": url}},
            "metadata.webhook_url",
        ),
        "/v1/campaigns": (
            {"route": "hello", "contacts": [{"to": "PJSIP/bob"}], "webhook_url": url},
            "webhook_url",
        ),
        "/v1/schedules": (
            {"to": "PJSIP/bob", "route": "hello", "cron": "0 9 * * *", "webhook_url": url},
            "webhook_url",
        ),
    }
    for path, (body, field_name) in bodies.items():
        refused = await rig.client.post(path, json=body, headers=auth(WRITE))
        assert refused.status_code == 422, (path, refused.text)
        problem = refused.json()
        assert [e["field"] for e in problem["errors"]] == [field_name], path
        assert "webhook_private_hosts" in problem["errors"][0]["message"]
    assert not rig.fake.originated


async def test_a_call_webhook_url_that_cannot_be_parsed_is_422(
    running: Callable[..., Any],
) -> None:
    # urlsplit() raises ValueError on an unclosed IPv6 bracket: that was a bare 500. A
    # host with an empty label, or a port past 65535, was accepted and sent to in the
    # background, where aiohttp refused it (the empty label killing a sender).
    rig: Running = await running()
    for url in ("http://[::1/x", "http://a..b/x", "http://exa mple.com/x", "http://a.com:99999/x"):
        body = {"to": "PJSIP/bob", "route": "hello", "metadata": {"webhook_url": url}}
        refused = await rig.client.post("/v1/calls", json=body, headers=auth(WRITE))
        assert refused.status_code == 422, (url, refused.text)
        assert [e["field"] for e in refused.json()["errors"]] == ["metadata.webhook_url"]
    assert not rig.fake.originated


async def test_private_webhook_hosts_the_operator_allows_are_accepted(
    running: Callable[..., Any],
) -> None:
    rig: Running = await running(
        platform={"webhook_private_hosts": ["127.0.0.1", "10.0.0.0/8", "hooks.internal"]}
    )

    async def schedule(url: str) -> int:
        body = {"to": "PJSIP/bob", "route": "hello", "cron": "0 9 * * *", "webhook_url": url}
        made = await rig.client.post("/v1/schedules", json=body, headers=auth(WRITE))
        return made.status_code

    for url in ("http://127.0.0.1:9/h", "http://10.200.0.1/h", "http://hooks.internal/h"):
        assert await schedule(url) == 201, url
    assert await schedule("http://192.168.0.7/h") == 422
    public = await rig.client.post(
        "/v1/calls",
        json={
            "to": "PJSIP/bob",
            "route": "hello",
            "metadata": {"webhook_url": "https://hooks.example.com/voxtra"},
        },
        headers=auth(WRITE),
    )
    assert public.status_code == 201, public.text


async def test_the_platform_holds_a_clients_webhook_name_to_its_address_check(
    running: Callable[..., Any], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the platform's own dispatcher: a call's webhook name passes the API (names
    are not resolved there) and resolves to loopback when its events are sent. Nothing
    reaches the receiver through it; the operator's own webhook, on the same loopback,
    still gets every event. Before, the platform's dispatcher did not check at all: the
    receiver got each event twice."""
    # Every name resolves to 127.0.0.1, for aiohttp's sessions as for the dispatcher's.
    monkeypatch.setattr("aiohttp.connector.DefaultResolver", Rebinding)
    monkeypatch.setattr("voxtra.platform.webhooks.DefaultResolver", Rebinding)
    port = receiver.url.split(":")[2].split("/")[0]
    rig: Running = await running(platform={"webhook_url": receiver.url, "webhook_secret": SECRET})
    placed = await rig.client.post(
        "/v1/calls",
        json={
            "to": "PJSIP/bob",
            "route": "hello",
            "metadata": {"webhook_url": f"http://hooks.rebind.test:{port}/hook"},
        },
        headers=auth(WRITE),
    )
    assert placed.status_code == 201, placed.text
    await rig.fake.wait_until(lambda: bool(rig.handled), timeout=5)
    await rig.fake.originated[-1].hang_up()
    hooks = service.dispatcher_of(rig.platform)
    kinds = {"call.started", "call.answered", "call.ended"}

    def types() -> list[str]:
        return [json.loads(body)["type"] for _, body in receiver.received]

    # Each of the client's three copies was tried and refused (waiting its retry).
    await wait_for(lambda: kinds <= set(types()) and hooks.waiting >= 3)
    assert sorted(types()) == sorted(kinds)  # once each: the operator's


async def test_a_retry_with_no_room_goes_rather_than_an_untried_event(
    receiver: Receiver,
) -> None:
    """The queue is full of events not yet tried and a delivery fails: its retry is what
    is dropped. It used to push out the head of the queue, an event never tried, maybe
    for a receiver that answers, to keep a retry of one that had failed."""
    refusing = closed_port()
    gate = asyncio.Event()
    sent: list[str] = []

    async def send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        sent.append(json.loads(body)["data"]["n"])
        await gate.wait()  # the one sender is busy with the refused delivery
        return 503 if url.endswith(f":{refusing}/hook") else 200

    hooks = WebhookDispatcher(
        SECRET, first_delay=60.0, attempts=3, max_queue=3, senders=1, send=send
    )
    await hooks.start()
    try:
        hooks.notify("call.ended", {"n": "refused"}, [f"http://127.0.0.1:{refusing}/hook"])
        await wait_for(lambda: sent == ["refused"])
        for n in ("a", "b", "c"):  # the queue is full behind it
            hooks.notify("call.ended", {"n": n}, [receiver.url])
        gate.set()
        await wait_for(lambda: hooks.delivered == 3)
        assert sent == ["refused", "a", "b", "c"]
        assert hooks.dropped == 1 and hooks.waiting == 0
    finally:
        await hooks.stop(timeout=0.1)
