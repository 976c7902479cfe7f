"""Webhooks: events POSTed to the app's URL and to a campaign's or schedule's own, signed,
retried with backoff in the background.

Events: ``call.started``, ``call.answered``, ``call.ended``, ``transcript.ready``,
``recording.ready``, ``campaign.finished``. The body is JSON::

    {"id": "evt_...", "type": "call.ended", "created_at": "2026-11-30T09:00:00+00:00",
     "data": {...}}

and carries three headers: ``Voxtra-Event`` (the type), ``Voxtra-Timestamp`` (Unix
seconds when it was signed) and ``Voxtra-Signature: v1=<hex>``, the HMAC-SHA256 under the
shared secret of ``"<timestamp>." + body`` (the raw bytes). A receiver recomputes it
(:func:`verify` does), compares in constant time and refuses a timestamp more than five
minutes off, so a captured request cannot be replayed later. Each retry is signed anew.

Delivery never blocks a call: :meth:`WebhookDispatcher.notify` only puts the event on a
bounded queue (``max_queue`` deliveries, those waiting a retry included; the oldest is
dropped, and counted, if a dead receiver lets it fill);
senders in the background POST with a timeout and retry a failure or a non-2xx answer
after 1, 2, 4, ... seconds up to ``attempts`` tries. The secret is never logged, nor a
URL's query string (where receivers often put a token of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from voxtra.platform.targets import InvalidTarget, allowed_address, check_webhook_url

__all__ = [
    "EVENTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Delivery",
    "WebhookDispatcher",
    "sign",
    "verify",
]

logger = logging.getLogger(__name__)

EVENTS = (
    "call.started",
    "call.answered",
    "call.ended",
    "transcript.ready",
    "recording.ready",
    "campaign.finished",
)
EVENT_HEADER = "Voxtra-Event"
TIMESTAMP_HEADER = "Voxtra-Timestamp"
SIGNATURE_HEADER = "Voxtra-Signature"
TOLERANCE = 300
"""Seconds a receiver accepts between the timestamp and its own clock."""


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``Voxtra-Signature`` value for ``body`` signed at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(
    secret: str | bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """Whether a received webhook is genuine and fresh (for receivers written in Python;
    ``docs/platform.md`` shows the same check in a few lines of any language)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    sent = int(timestamp)
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    expected = sign(secret, sent, body)
    # A header may list several signatures (a secret being rotated): any one may match.
    return any(hmac.compare_digest(expected, part.strip()) for part in signature.split(","))


def _safe(url: str) -> str:
    """The URL without its query, fragment or credentials: what logs may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _acceptable(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= 2000
    except ValueError:
        return False


@dataclass
class Delivery:
    url: str
    event: str
    body: bytes
    tries: int = 0
    last_error: str | None = None
    id: str = field(default_factory=lambda: f"evt_{secrets.token_hex(10)}")


Sender = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]
"""``send(url, body, headers, timeout) -> HTTP status`` (a test injects one)."""


class _PublicResolver(AbstractResolver):
    """DNS answers cut to the addresses a client's webhook may reach.

    aiohttp connects to what its resolver returns, so the address checked is the
    address connected to: a name that passed the API's check (names are not resolved
    there) and then resolves to 127.0.0.1 or 169.254.169.254, at once or by rebinding
    its DNS record later, reaches nothing. A name the operator allows keeps every
    address."""

    def __init__(self, resolver: AbstractResolver, allowed: Sequence[str]) -> None:
        self._resolver = resolver
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        if host.lower().removesuffix(".") in self._allowed:
            return found
        public = [
            result for result in found if allowed_address(ip_address(result["host"]), self._allowed)
        ]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._resolver.close()


class WebhookDispatcher:
    """Signs and delivers events in the background; :meth:`notify` never waits."""

    def __init__(
        self,
        secret: str | None,
        *,
        attempts: int = 6,
        first_delay: float = 1.0,
        max_delay: float = 300.0,
        timeout: float = 5.0,
        max_queue: int = 10_000,
        senders: int = 4,
        send: Sender | None = None,
        observe: Callable[[str, str], None] | None = None,
        private_hosts: Sequence[str] | None = None,
        trusted: Sequence[str] = (),
        resolver: AbstractResolver | None = None,
    ) -> None:
        """``private_hosts``: when given (``platform.webhook_private_hosts``), every URL
        but the ``trusted`` ones (the operator's ``platform.webhook_url``) is a client's,
        held to :func:`~voxtra.platform.targets.check_webhook_url` at each try and at
        connect time: its host name must resolve to addresses that check allows, and
        the connection goes to those addresses only. ``resolver``: the DNS resolver under
        that check (aiohttp's default)."""
        self._secret = secret
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.senders = senders
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(max_queue)
        self._send = send
        self._observe = observe
        self.private_hosts = None if private_hosts is None else tuple(private_hosts)
        self.trusted = frozenset(trusted)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None
        """The session of clients' URLs: its resolver refuses private addresses."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, tuple[Delivery, asyncio.TimerHandle]] = {}
        """Deliveries waiting their backoff before the next try, by id, oldest first."""
        self.delivered = 0
        self.failed = 0
        """Deliveries given up after every try."""
        self.dropped = 0
        """Deliveries dropped because the queue was full."""

    @property
    def pending(self) -> int:
        """Deliveries not yet delivered nor given up (being tried excluded): queued, or
        waiting their backoff; at most ``max_queue``."""
        return self._queue.qsize() + len(self._waiting)

    @property
    def waiting(self) -> int:
        """Deliveries refused at least once, waiting their backoff before the next try."""
        return len(self._waiting)

    def __repr__(self) -> str:  # never the secret
        return f"<WebhookDispatcher pending={self.pending} failed={self.failed}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._send is None and self._session is None:
            self._session = aiohttp.ClientSession()
            if self.private_hosts is not None:
                resolver = _PublicResolver(self._resolver or DefaultResolver(), self.private_hosts)
                self._guarded = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(resolver=resolver)
                )
        for i in range(self.senders):
            self._spawn(self._sender(), f"voxtra-webhooks-{i}")

    async def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in (self._session, self._guarded):
            if session is not None:
                await session.close()
        self._session = self._guarded = None

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events ------------------------------------------------------------------------

    def notify(self, event: str, data: dict[str, Any], urls: Sequence[str]) -> None:
        """Queue ``event`` for each of ``urls`` (duplicates once); returns at once."""
        if not urls:
            return
        body = json.dumps(
            {
                "id": f"evt_{secrets.token_hex(10)}",
                "type": event,
                "created_at": datetime.now(UTC).isoformat(),
                "data": data,
            },
            default=str,
            separators=(",", ":"),
        ).encode()
        for url in dict.fromkeys(urls):
            if not _acceptable(url):
                # Only http(s) to a named host: a client-given URL reaches nothing else.
                logger.warning("webhooks: not an http(s) URL, skipped: %s", _safe(url))
                continue
            self._put(Delivery(url, event, body))

    def _put(self, delivery: Delivery) -> None:
        self._make_room()
        self._queue.put_nowait(delivery)

    def _make_room(self) -> None:
        """Drop the oldest deliveries until one more fits in ``max_queue``: first those
        waiting a retry (refused already, and queued before anything still queued),
        then the head of the queue.

        The retries count: kept apart from the queue, a receiver that refuses at once
        (a closed port, a 503) let every event wait its backoff outside the bound, the
        queue empty: with max_queue 5, 50 events notified as the sender drained them
        were 50 retries held in memory, none dropped."""
        while 0 < self._queue.maxsize <= self.pending:
            if self._waiting:
                old, handle = self._waiting.pop(next(iter(self._waiting)))
                handle.cancel()
            else:
                old = self._queue.get_nowait()
                self._queue.task_done()
            self.dropped += 1
            self._count(old.event, "dropped")
            logger.warning("webhooks: queue full, dropped a %s for %s", old.event, _safe(old.url))

    def _retry(self, delivery: Delivery) -> None:
        if self._waiting.pop(delivery.id, None) is not None:
            self._put(delivery)

    def _count(self, event: str, result: str) -> None:
        if self._observe is not None:
            try:
                self._observe(event, result)
            except Exception:  # a metrics failure must not stop deliveries
                logger.exception("webhooks: observer failed")

    def headers(self, delivery: Delivery, timestamp: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.event,
            TIMESTAMP_HEADER: str(timestamp),
            "User-Agent": "voxtra-webhooks/1",
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, delivery.body)
        return headers

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self._send is not None:
            return await self._send(url, body, headers, self.timeout)
        session = self._session if self._guarded is None or url in self.trusted else self._guarded
        assert session is not None
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            allow_redirects=False,
        ) as response:
            return response.status

    async def _sender(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: Delivery) -> None:
        delivery.tries += 1
        final = False
        try:
            if self.private_hosts is not None and delivery.url not in self.trusted:
                # Checked again as sent: the operator's list may have changed since.
                check_webhook_url(delivery.url, self.private_hosts)
            status = await self._post(
                delivery.url, delivery.body, self.headers(delivery, int(time.time()))
            )
            ok = 200 <= status < 300
            delivery.last_error = None if ok else f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, delivery.last_error = False, type(exc).__name__
            # A URL aiohttp cannot send to (InvalidURL) fails the same way every time.
            final = isinstance(exc, ValueError)
        except InvalidTarget:
            ok, final, delivery.last_error = False, True, "a private host"
        except Exception as exc:
            # Anything else ends this delivery, never the sender: a UnicodeError from
            # the IDNA codec ("http://a..b/", an empty label) escaped here and killed
            # the sender task; four such URLs and no webhook went out any more.
            logger.warning(
                "webhooks: cannot send a %s to %s (%s)",
                delivery.event,
                _safe(delivery.url),
                type(exc).__name__,
            )
            ok, final, delivery.last_error = False, True, type(exc).__name__
        if ok:
            self.delivered += 1
            self._count(delivery.event, "delivered")
            return
        if final or delivery.tries >= self.attempts:
            self.failed += 1
            self._count(delivery.event, "failed")
            logger.warning(
                "webhooks: gave up on a %s for %s after %d tries (%s)",
                delivery.event,
                _safe(delivery.url),
                delivery.tries,
                delivery.last_error,
            )
            return
        self._count(delivery.event, "retried")
        delay = min(self.first_delay * 2 ** (delivery.tries - 1), self.max_delay)
        # Waits apart from the senders (a dead receiver's backoff holds up no other), but
        # within max_queue (see _make_room).
        if 0 < self._queue.maxsize <= self.pending and not self._waiting:
            # No room, and no older retry to give it: this retry goes, not the head of
            # the queue, an event never tried yet, maybe for a receiver that answers.
            self.dropped += 1
            self._count(delivery.event, "dropped")
            logger.warning(
                "webhooks: queue full, dropped the retry of a %s for %s",
                delivery.event,
                _safe(delivery.url),
            )
            return
        self._make_room()
        handle = asyncio.get_running_loop().call_later(delay, self._retry, delivery)
        self._waiting[delivery.id] = (delivery, handle)
