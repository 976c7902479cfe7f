"""The speech-to-speech engines, made per call, share their vendor SDK's client: one
per set of settings (voxtra/providers/sdk_clients.py says what building one cost)."""

from __future__ import annotations

import pytest

from voxtra.providers import sdk_clients
from voxtra.providers.gemini_live import GeminiLiveEngine
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine
from voxtra.providers.sdk_clients import MAX_CLIENTS, reused_client


def test_engines_of_the_same_settings_share_one_sdk_client() -> None:
    a = OpenAIRealtimeEngine("key-a", base_url="http://127.0.0.1:9/v1")
    b = OpenAIRealtimeEngine("key-a", base_url="http://127.0.0.1:9/v1", voice="cedar")
    other_key = OpenAIRealtimeEngine("key-b", base_url="http://127.0.0.1:9/v1")
    other_url = OpenAIRealtimeEngine("key-a", base_url="http://127.0.0.1:10/v1")
    assert a._client is b._client
    assert other_key._client is not a._client and other_key._client.api_key == "key-b"
    assert other_url._client is not a._client
    # The conversation is each engine's own.
    assert a is not b and a.voice != b.voice

    g1 = GeminiLiveEngine("key-a", base_url="http://127.0.0.1:9")
    g2 = GeminiLiveEngine("key-a", base_url="http://127.0.0.1:9")
    assert g1._client is g2._client and g1._client is not a._client
    # The cache is keyed by the keys' digests, never the keys.
    assert not any("key-a" in key or "key-b" in key for key in sdk_clients._clients)


def test_the_most_recently_used_clients_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_clients, "_clients", type(sdk_clients._clients)())
    built: list[int] = []

    def make(n: int) -> object:
        built.append(n)
        return object()

    first = reused_client("t", "k", (0,), lambda: make(0))
    for n in range(1, MAX_CLIENTS):
        reused_client("t", "k", (n,), lambda n=n: make(n))  # type: ignore[misc]
    assert reused_client("t", "k", (0,), lambda: make(-1)) is first  # used: kept in front
    reused_client("t", "k", (MAX_CLIENTS,), lambda: make(MAX_CLIENTS))  # one more: (1,) goes
    assert len(sdk_clients._clients) == MAX_CLIENTS
    assert reused_client("t", "k", (0,), lambda: make(-1)) is first
    reused_client("t", "k", (1,), lambda: make(1))
    assert built == [*range(MAX_CLIENTS + 1), 1]
