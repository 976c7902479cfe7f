"""OpenAILLM through the real openai SDK against FakeOpenAI's SSE chat completions."""

from __future__ import annotations

import asyncio
import json

import pytest
from shared_http_checks import check_one_session_closed_with_the_scope

from voxtra.errors import ProviderError
from voxtra.providers.base import LLM, ChatMessage, LLMChunk, ToolSpec
from voxtra.providers.http import HttpScope
from voxtra.providers.openai_llm import OpenAILLM
from voxtra.testing.fakes import FakeOpenAI, OpenAIReply

pytestmark = pytest.mark.usefixtures("http_scope")  # each test on both HTTP stacks

WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
HISTORY = [ChatMessage("system", "You are a phone agent."), ChatMessage("user", "Hi there")]


async def collect(llm: OpenAILLM, messages=HISTORY, tools=()) -> list[LLMChunk]:
    return [c async for c in llm.generate(messages, tools)]


async def test_streams_text_as_it_arrives() -> None:
    async with FakeOpenAI("sk-test", [OpenAIReply(text="Hello! How can I help you today?")]) as f:
        llm = OpenAILLM("sk-test", model="gpt-test", base_url=f.base_url, temperature=0.2)
        assert isinstance(llm, LLM)
        chunks = await collect(llm)
    assert len(chunks) == 7
    assert "".join(c.text for c in chunks) == "Hello! How can I help you today?"
    assert all(not c.tool_calls for c in chunks)
    (request,) = f.requests
    assert request["model"] == "gpt-test" and request["stream"] is True
    assert request["temperature"] == 0.2 and "tools" not in request
    assert request["messages"] == [
        {"role": "system", "content": "You are a phone agent."},
        {"role": "user", "content": "Hi there"},
    ]


async def test_tool_call_fragments_are_assembled_and_history_round_trips() -> None:
    replies = [
        OpenAIReply(
            tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
        ),
        OpenAIReply(text="Sunny in Paris, snowing in Oslo."),
    ]
    async with FakeOpenAI("sk-test", replies) as f:
        llm = OpenAILLM("sk-test", base_url=f.base_url)
        chunks = await collect(llm, tools=[WEATHER])
        calls = [call for c in chunks for call in c.tool_calls]
        assert [(c.name, c.arguments) for c in calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_weather", {"city": "Oslo"}),
        ]
        assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
        history = [
            *HISTORY,
            ChatMessage("assistant", "", tool_calls=calls),
            ChatMessage("tool", json.dumps({"sky": "sunny"}), tool_call_id=calls[0].id),
            ChatMessage("tool", json.dumps({"sky": "snow"}), tool_call_id=calls[1].id),
        ]
        answer = "".join(c.text for c in await collect(llm, history, [WEATHER]))
    assert answer == "Sunny in Paris, snowing in Oslo."
    first, second = f.requests
    assert first["tools"] == [
        {"type": "function", "function": {"name": "get_weather",
                                          "description": WEATHER.description,
                                          "parameters": WEATHER.parameters}}
    ]  # fmt: skip
    assistant, tool1, _ = second["messages"][2:]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert tool1 == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": calls[0].id}


@pytest.mark.parametrize(("status", "match"), [(500, "HTTP 500"), (429, "HTTP 429")])
async def test_http_errors_are_provider_errors_without_retry(status: int, match: str) -> None:
    async with FakeOpenAI("sk-test", [OpenAIReply(status=status)]) as f:
        with pytest.raises(ProviderError, match=match):
            await collect(OpenAILLM("sk-test", base_url=f.base_url))
    assert len(f.requests) == 1  # max_retries=0: a phone call cannot wait for backoff


async def test_retries_when_asked() -> None:
    replies = [OpenAIReply(status=500), OpenAIReply(text="Second try.")]
    async with FakeOpenAI("sk-test", replies) as f:
        chunks = await collect(OpenAILLM("sk-test", base_url=f.base_url, max_retries=1))
    assert "".join(c.text for c in chunks) == "Second try." and len(f.requests) == 2


async def test_bad_key_is_provider_error() -> None:
    async with FakeOpenAI("sk-right") as f:
        with pytest.raises(ProviderError, match="openai: HTTP 401"):
            await collect(OpenAILLM("sk-wrong", base_url=f.base_url))


async def test_connection_dropped_mid_stream_after_some_text() -> None:
    reply = OpenAIReply(text="one two three four five six", drop_after=3)
    async with FakeOpenAI("sk-test", [reply]) as f:
        got: list[str] = []
        with pytest.raises(ProviderError, match="stream failed"):
            async for chunk in OpenAILLM("sk-test", base_url=f.base_url).generate(HISTORY):
                got.append(chunk.text)
    assert got == ["one", " two"]  # role chunk + two words arrived before the cut


async def test_cancelling_the_consumer_closes_the_stream() -> None:
    reply = OpenAIReply(text=" ".join(["word"] * 200), delay=0.01)
    async with FakeOpenAI("sk-test", [reply, OpenAIReply(text="next")]) as f:
        llm = OpenAILLM("sk-test", base_url=f.base_url)
        gen = llm.generate(HISTORY)
        first = await gen.__anext__()
        assert first.text == "word"
        await asyncio.wait_for(gen.aclose(), 1.0)  # not 2 s of remaining words
        # the client is still usable afterwards
        assert "".join(c.text for c in await collect(llm)) == "next"


async def test_invalid_tool_arguments_are_a_provider_error() -> None:
    replies = [OpenAIReply(tool_calls=[("get_weather", '{"city": "Par')])]
    async with FakeOpenAI("sk-test", replies) as f:
        with pytest.raises(ProviderError, match="invalid JSON arguments"):
            await collect(OpenAILLM("sk-test", base_url=f.base_url), tools=[WEATHER])


async def test_tool_call_without_arguments_gets_an_empty_dict() -> None:
    async with FakeOpenAI("sk-test", [OpenAIReply(tool_calls=[("hang_up", "")])]) as f:
        chunks = await collect(OpenAILLM("sk-test", base_url=f.base_url), tools=[WEATHER])
    (call,) = chunks[-1].tool_calls
    assert call.name == "hang_up" and call.arguments == {}


async def test_stream_chunks_are_not_built_as_sdk_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's per-chunk pydantic models (construct_type, typing introspection per field)
    # were most of a request's CPU at 46 agent calls (bench/agent_density.py): the chunks
    # are read as the dicts their JSON decodes to, the SDK still doing the HTTP and SSE.
    import openai._base_client

    built: list[object] = []
    construct = openai._base_client.construct_type

    def counting(**kwargs: object) -> object:
        built.append(kwargs.get("type_"))
        return construct(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(openai._base_client, "construct_type", counting)
    replies = [
        OpenAIReply(text="We are open from nine to five."),
        OpenAIReply(tool_calls=[("get_weather", {"city": "Paris"})]),
        OpenAIReply(pieces=['{"action": "say", "text": "Nine to five."}']),
    ]
    async with FakeOpenAI("sk-test", replies) as f:
        llm = OpenAILLM("sk-test", base_url=f.base_url)
        text = await collect(llm)
        tool = await collect(llm, tools=[WEATHER])
        json_llm = OpenAILLM("sk-test", base_url=f.base_url, tool_mode="json")
        said = await collect(json_llm, tools=[WEATHER])
    assert "".join(c.text for c in text) == "We are open from nine to five."
    (call,) = tool[-1].tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert "".join(c.text for c in said) == "Nine to five."
    assert built == []


async def test_request_options_outside_the_body_still_apply() -> None:
    # create()'s extra_body / extra_query / extra_headers / timeout are request options,
    # not body fields: they keep their meaning on the leaner request path.
    async with FakeOpenAI("sk-test", [OpenAIReply(text="Fine.")]) as f:
        llm = OpenAILLM(
            "sk-test",
            base_url=f.base_url,
            temperature=0.1,
            extra_body={"seed": 7},
            extra_headers={"X-Test": "1"},
            extra_query={"q": "1"},
            timeout=5.0,
        )
        chunks = await collect(llm)
    assert "".join(c.text for c in chunks) == "Fine."
    (request,) = f.requests
    assert request["seed"] == 7 and request["temperature"] == 0.1
    assert not {"extra_body", "extra_headers", "extra_query", "timeout"} & set(request)


async def test_in_a_shared_scope_the_sdk_runs_on_one_aiohttp_session(
    http_scope: HttpScope | None,
) -> None:
    async with FakeOpenAI("sk-test", [OpenAIReply(text="One. Two.")] * 2) as f:
        llm = OpenAILLM("sk-test", base_url=f.base_url)
        assert "".join(c.text for c in await collect(llm)) == "One. Two."
        assert "".join(c.text for c in await collect(llm)) == "One. Two."
    await check_one_session_closed_with_the_scope(
        http_scope, "openai", llm, lambda sdk: sdk._client
    )
