"""Vendor SDK clients shared by the providers an app makes per call.

A speech-to-speech engine holds one conversation, so an app makes one per call. Its
vendor's SDK client holds no conversation: a key, the service's addresses and an HTTP
stack. It is also costly to build, mostly the HTTP stack's TLS set-up (the CA
certificates loaded). On this 2-core box, 20 builds each after a first one, CPU per
build: ``AsyncOpenAI(...)`` 36 ms, ``genai.Client(...)`` 146 ms. That ran on the event
loop in the call's handler, and every other call's audio waited for it. The engines use
their client only to open their WebSocket, which the SDKs do with a connection of its
own each time, so one client serves every engine made with the same settings.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["MAX_CLIENTS", "reused_client"]

T = TypeVar("T")

MAX_CLIENTS = 32
"""Clients kept, the most recently used (settings that change, such as a rotated key,
do not pile up)."""

_clients: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()


def reused_client(
    sdk: str, secret: str, settings: tuple[Hashable, ...], make: Callable[[], T]
) -> T:
    """The client ``make()`` builds for ``sdk`` with ``secret`` (its key) and
    ``settings`` (the rest it is built from), built the first time it is asked for.
    The cache holds the key's SHA-256, never the key."""
    key = (sdk, hashlib.sha256(secret.encode()).hexdigest(), *settings)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = make()
        if len(_clients) > MAX_CLIENTS:
            _clients.popitem(last=False)
    else:
        _clients.move_to_end(key)
    return client
