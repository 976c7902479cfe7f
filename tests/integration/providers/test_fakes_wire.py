"""The fakes' wire format seen without any SDK: what a non-Python client would get."""

from __future__ import annotations

import json

import aiohttp
import pytest
from openai import AsyncOpenAI

from voxtra.errors import ProviderError
from voxtra.media.frames import AudioChunk
from voxtra.providers.deepgram_stt import DeepgramSTT
from voxtra.testing.fakes import DeepgramTurn, FakeDeepgram, FakeOpenAI, OpenAIReply


async def test_openai_sse_lines_and_done() -> None:
    reply = OpenAIReply(text="Hi you", tool_calls=[("f", {"a": 1})])
    async with FakeOpenAI("sk", [reply]) as fake, aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with http.post(
            f"{fake.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = (await resp.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in deltas) == "Hi you"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "f"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"a": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_openai_non_streaming_completion_through_the_sdk() -> None:
    async with FakeOpenAI("sk", [OpenAIReply(text="Plain answer.")]) as fake:
        client = AsyncOpenAI(api_key="sk", base_url=fake.base_url, max_retries=0)
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
        await client.close()
    assert completion.choices[0].message.content == "Plain answer."
    assert completion.choices[0].finish_reason == "stop"


async def test_openai_rejects_bodies_without_model() -> None:
    async with FakeOpenAI("sk") as fake, aiohttp.ClientSession() as http, http.post(
        f"{fake.base_url}/chat/completions", json={"messages": []},
        headers={"Authorization": "Bearer sk"},
    ) as resp:  # fmt: skip
        assert resp.status == 400
        assert "model" in (await resp.json())["error"]["message"]


async def test_deepgram_messages_on_the_socket() -> None:
    turns = [DeepgramTurn(320, "two words", interims=["two"])]
    async with FakeDeepgram("k", turns) as fake, aiohttp.ClientSession() as http:
        url = (
            f"{fake.url}/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000"
            "&interim_results=true&vad_events=true&utterance_end_ms=1000"
        )
        async with http.ws_connect(url, headers={"Authorization": "Token k"}) as ws:
            await ws.send_str(json.dumps({"type": "KeepAlive"}))
            await ws.send_bytes(b"\xff" * 320)
            await ws.send_str(json.dumps({"type": "Bogus"}))
            await ws.send_str(json.dumps({"type": "CloseStream"}))
            messages = [json.loads(m.data) async for m in ws]
    kinds = [m["type"] for m in messages]
    assert kinds == ["SpeechStarted", "Results", "Results", "UtteranceEnd", "Error", "Metadata"]
    interim, final = messages[1], messages[2]
    assert (interim["is_final"], final["is_final"], final["speech_final"]) == (False, True, True)
    alt = final["channel"]["alternatives"][0]
    assert alt["transcript"] == "two words" and [w["word"] for w in alt["words"]] == [
        "two",
        "words",
    ]
    assert final["start"] == 0.0 and final["duration"] == 0.04  # 320 u-law bytes at 8 kHz
    assert messages[5]["duration"] == 0.04
    assert fake.sessions[0].controls[0] == {"type": "KeepAlive"}


async def test_deepgram_refuses_bad_auth_and_missing_model() -> None:
    async with FakeDeepgram("k") as fake, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as bad_key:
            await http.ws_connect(
                f"{fake.url}/v1/listen?model=x", headers={"Authorization": "Token z"}
            )
        assert bad_key.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_model:
            await http.ws_connect(f"{fake.url}/v1/listen", headers={"Authorization": "Token k"})
        assert no_model.value.status == 400


async def test_deepgram_server_error_message_fails_the_stream() -> None:
    async with FakeDeepgram("k") as fake:
        stream = await DeepgramSTT("k", base_url=fake.url).stream()
        await stream.send(AudioChunk.silence())
        # an unknown control message makes the server answer with an Error message
        await stream._socket._send({"type": "NotAThing"})
        with pytest.raises(ProviderError, match="server error: unknown control"):
            async for _ in stream.transcripts():
                pass
        await stream.close()
