"""OpenAILLM's JSON-schema tool mode, through the real openai SDK against FakeOpenAI.

The replies are the bytes a llama.cpp server sends under a ``response_format`` schema:
one JSON object, cut into content deltas at arbitrary places (inside keys, inside an
escape). What is checked: the spoken text streams out before the object is complete,
tool calls come out parsed, the request carries the schema (action first) and no
``tools``, and the system message (the cached prefix) is the same in every request.
"""

from __future__ import annotations

import itertools
import json

import anyio
import pytest

from voxtra.errors import ConfigError, ProviderError
from voxtra.pipeline import Agent, AgentResponseEvent, PipelineEvent, Speak, VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.providers.base import ChatMessage, LLMChunk, ToolSpec
from voxtra.providers.openai_llm import OpenAILLM
from voxtra.testing.doubles import EnergyVAD, ScriptedSTT, ScriptedTTS
from voxtra.testing.fakes import FakeOpenAI, OpenAIReply

pytestmark = pytest.mark.usefixtures("http_scope")  # each test on both HTTP stacks

WEATHER = ToolSpec(
    "get_weather",
    "Today's weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "the city name"}},
        "required": ["city"],
    },
)
HANDOFF = ToolSpec(
    "transfer_to_person",
    "Hand the call to a person.",
    {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)
SYSTEM = "You are a phone agent."
HISTORY = [ChatMessage("system", SYSTEM), ChatMessage("user", "Is it raining in Berlin?")]


def cut(text: str, *at: int) -> list[str]:
    """``text`` cut at the given offsets."""
    bounds = [0, *at, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


async def collect(llm: OpenAILLM, messages=HISTORY, tools=(WEATHER, HANDOFF)) -> list[LLMChunk]:
    return [c async for c in llm.generate(messages, tools)]


async def test_spoken_text_streams_while_the_json_arrives() -> None:
    reply = '{"action": "say", "text": "We open at nine. Say \\"hi\\" \\u00e9t\\u00e9!\\nBye."}'
    # cut inside "action", inside an escape (\") and inside a \u escape
    pieces = cut(reply, 5, 20, 34, 50, 53, 60, 63, 70)
    async with FakeOpenAI("k", [OpenAIReply(pieces=pieces)]) as f:
        llm = OpenAILLM("k", model="qwen", base_url=f.base_url, tool_mode="json")
        chunks = await collect(llm)
    texts = [c.text for c in chunks if c.text]
    assert "".join(texts) == 'We open at nine. Say "hi" été!\nBye.'
    assert len(texts) >= 4  # piece by piece, not once at the end
    assert not any(c.tool_calls for c in chunks)
    (request,) = f.requests
    assert "tools" not in request and request["stream"] is True
    schema = request["response_format"]["json_schema"]["schema"]
    assert [next(iter(o["properties"])) for o in schema["anyOf"]] == ["action"] * 3
    assert [o["properties"]["action"]["const"] for o in schema["anyOf"]] == [
        "say",
        "get_weather",
        "transfer_to_person",
    ]
    assert schema["anyOf"][1]["properties"]["arguments"] == WEATHER.parameters
    system = request["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(SYSTEM + "\n\n")
    assert "- get_weather: Today's weather in a city." in system["content"]
    assert '"city": string (the city name)' in system["content"]


async def test_a_tool_action_becomes_a_tool_call_and_the_result_goes_back() -> None:
    call = '{"action": "get_weather", "arguments": {"city": "Berlin"}}'
    answer = '{"action": "say", "text": "It is rainy in Berlin, nine degrees."}'
    replies = [OpenAIReply(pieces=cut(call, 3, 17, 30, 44)), OpenAIReply(pieces=cut(answer, 31))]
    async with FakeOpenAI("k", replies) as f:
        llm = OpenAILLM("k", base_url=f.base_url, tool_mode="json")
        agent = Agent(llm, system_prompt=SYSTEM)
        seen: list[str] = []

        def get_weather(city: str) -> str:
            """Today's weather in a city.

            Args:
                city: the city name
            """
            seen.append(city)
            return "rainy, nine degrees"

        agent.add_tool(get_weather)
        reply = await agent.respond_with_tools("Is it raining in Berlin today?")
    assert seen == ["Berlin"]
    assert reply.text == "It is rainy in Berlin, nine degrees."
    first, second = f.requests
    # The fixed head of the prompt is identical in both requests: a cacheable prefix.
    assert first["messages"][0] == second["messages"][0]
    assert second["messages"][2:] == [
        {"role": "assistant", "content": json.dumps(json.loads(call))},
        {"role": "user", "content": "(tool result) rainy, nine degrees"},
    ]
    # After a tool result only "say" is allowed: no loop calling the tool again.
    assert second["response_format"]["json_schema"]["schema"]["properties"]["action"] == {
        "const": "say"
    }


async def test_plain_text_from_a_server_ignoring_the_schema_is_spoken() -> None:
    async with FakeOpenAI("k", [OpenAIReply(text="We are open from nine.")]) as f:
        llm = OpenAILLM("k", base_url=f.base_url, tool_mode="json")
        chunks = await collect(llm)
    assert "".join(c.text for c in chunks) == "We are open from nine."


@pytest.mark.parametrize(
    "pieces",
    [
        ['{"action": "get_weather", "arguments": {"city": "Ber'],  # cut off
        ['{"action": "get_weather", "arguments": "Berlin"}'],  # not an object
        ['{"action": "say", "text": " "}'],  # nothing to say: silence, never
    ],
)
async def test_a_broken_tool_reply_is_a_provider_error(pieces: list[str]) -> None:
    async with FakeOpenAI("k", [OpenAIReply(pieces=pieces)]) as f:
        llm = OpenAILLM("k", base_url=f.base_url, tool_mode="json")
        with pytest.raises(ProviderError):
            await collect(llm)


async def test_warm_up_sends_the_same_system_message_for_one_token() -> None:
    answer = '{"action": "say", "text": "Hello."}'
    async with FakeOpenAI("k", [OpenAIReply(pieces=[answer])]) as f:
        llm = OpenAILLM("k", base_url=f.base_url, tool_mode="json", temperature=0)
        await llm.warm_up(SYSTEM, [WEATHER, HANDOFF])
        await collect(llm)
    warm, real = f.requests
    assert warm["max_tokens"] == 1 and not warm.get("stream")
    assert warm["messages"] == real["messages"][:1]
    assert "response_format" not in warm  # a grammar is not part of the prompt


async def test_a_conversation_warmed_after_a_speak_answer_is_the_next_requests_prefix() -> None:
    """LocalLLM.warm_conversation after a turn: the history (a tool's Speak answer the
    server never generated included) is sent for one token, and the next question's
    request starts with exactly those messages, so llama.cpp's cache covers them."""
    call = 'get_opening_hours", "arguments": {"day": "Sunday"}}'
    replies = [
        OpenAIReply(pieces=[call]),
        OpenAIReply(text="x"),  # the warm-up's one token
        OpenAIReply(pieces=['say", "text": "From nine."}']),
    ]
    async with FakeOpenAI("k", replies) as f:
        llm = OpenAILLM("k", base_url=f.base_url, tool_mode="json", json_guide="prefill")
        agent = Agent(llm, system_prompt=SYSTEM)

        def get_opening_hours(day: str) -> Speak:
            """When we are open."""
            return Speak(f"On {day} we are closed.")

        agent.add_tool(get_opening_hours)
        reply = await agent.respond_with_tools("are you open on sunday")
        assert reply.text == "On Sunday we are closed." and len(f.requests) == 1
        await llm.warm_up(tools=agent.tool_specs, history=agent.history)
        await agent.respond("and on monday?")
    _first, warm, after = f.requests
    assert warm["max_tokens"] == 1 and "response_format" not in warm
    assert warm["messages"][-1] == {
        "role": "assistant",
        "content": json.dumps({"action": "say", "text": "On Sunday we are closed."}),
    }
    assert after["messages"][: len(warm["messages"])] == warm["messages"]


def test_tool_mode_is_checked() -> None:
    with pytest.raises(ConfigError, match="tool_mode"):
        OpenAILLM("k", tool_mode="xml")  # type: ignore[arg-type]


async def test_prefill_guide_continues_the_reply_and_stops_at_the_object() -> None:
    """``json_guide="prefill"``: no schema; the request ends with the reply's start, the
    server streams only the continuation; what a model adds after the object is ignored."""
    call = 'get_weather", "arguments": {"city": "Oslo"}}'
    answer = 'It is snowing in Oslo." }'
    replies = [
        OpenAIReply(text="x"),  # the warm-up's one token
        OpenAIReply(pieces=[*cut(call, 4, 16, 30), "\nAnd then", " more."]),
        OpenAIReply(pieces=cut(answer, 3, 11)),
    ]
    async with FakeOpenAI("k", replies) as f:
        llm = OpenAILLM("k", base_url=f.base_url, tool_mode="json", json_guide="prefill")
        agent = Agent(llm, system_prompt=SYSTEM)

        def get_weather(city: str) -> str:
            """Today's weather in a city."""
            return "snow"

        agent.add_tool(get_weather)
        await llm.warm_up(SYSTEM, agent.tool_specs)
        reply = await agent.respond_with_tools("will it snow in Oslo")
    assert reply.text == "It is snowing in Oslo."
    warm, first, second = f.requests
    assert warm["messages"] == first["messages"][:1]  # the same head, no prefill in it
    assert "response_format" not in first and "response_format" not in second
    assert first["messages"][-1] == {"role": "assistant", "content": '{"action": "'}
    assert second["messages"][-1] == {"role": "assistant", "content": '{"action": "say", "text": "'}
    assert second["messages"][-3]["content"] == json.dumps(
        {"action": "get_weather", "arguments": {"city": "Oslo"}}
    )
    with pytest.raises(ConfigError, match="json_guide"):
        OpenAILLM("k", tool_mode="json", json_guide="grammar")  # type: ignore[arg-type]


async def test_a_tool_preamble_is_said_as_soon_as_the_action_names_the_tool() -> None:
    """``tool_preamble``: the text comes before the rest of the tool call's JSON (the
    caller hears it while the arguments, the tool and the second request run), it is
    the assistant message's text in the history, and the next request still shows the
    model its own JSON, not the preamble."""
    call = 'get_weather", "arguments": {"city": "Berlin"}}'
    answer = 'It is rainy in Berlin." }'
    replies = [
        OpenAIReply(pieces=cut(call, 4, 11, 16, 30)),
        OpenAIReply(pieces=cut(call, 4, 11, 16, 30)),
        OpenAIReply(pieces=cut(answer, 5)),
    ]
    preambles = {"get_weather": "Let me check the weather.", "*": "One moment."}
    async with FakeOpenAI("k", replies) as f:
        llm = OpenAILLM(
            "k", base_url=f.base_url, tool_mode="json", json_guide="prefill",
            tool_preamble=preambles,
        )  # fmt: skip
        agent = Agent(llm, system_prompt=SYSTEM)

        def get_weather(city: str) -> str:
            """Today's weather in a city."""
            return "rainy"

        agent.add_tool(get_weather)
        chunks = [c async for c in llm.generate(HISTORY, agent.tool_specs)]
        reply = await agent.respond_with_tools("is it raining in Berlin")
    # The preamble is the first chunk, before the tool call; the action's name needed
    # two pieces, the arguments three more.
    assert [c.text for c in chunks] == ["Let me check the weather. ", ""]
    assert chunks[1].tool_calls[0].arguments == {"city": "Berlin"}
    assert reply.text == "It is rainy in Berlin."
    said = [m for m in agent.history if m.role == "assistant"]
    assert [m.content.strip() for m in said] == ["Let me check the weather.", reply.text]
    assert said[0].tool_calls[0].name == "get_weather"
    # Requests: the generate() above, then the agent's two.
    _, first, second = f.requests
    assert second["messages"][-3]["content"] == json.dumps(
        {"action": "get_weather", "arguments": {"city": "Berlin"}}
    )
    assert all("Let me check" not in m["content"] for m in second["messages"])
    assert first["messages"][-1] == {"role": "assistant", "content": '{"action": "'}


async def test_the_pipeline_speaks_the_preamble_once_before_the_tool_runs() -> None:
    """Through the voice pipeline: the preamble reaches TTS while the tool call's JSON
    is still streaming (before the tool call is complete), is spoken once, and the
    answer after the tool result follows it."""
    call = 'get_weather", "arguments": {"city": "Berlin"}}'
    answer = 'It is rainy in Berlin." }'
    replies = [
        OpenAIReply(pieces=cut(call, 4, 11, 16, 30), delay=0.1),
        OpenAIReply(pieces=cut(answer, 5)),
    ]
    media = MemoryMediaIO(virtual=False)
    clock = media.clock
    ran: list[float] = []

    def get_weather(city: str) -> str:
        """Today's weather in a city."""
        ran.append(clock.now())
        return "rainy"

    async with FakeOpenAI("k", replies) as f:
        llm = OpenAILLM(
            "k", base_url=f.base_url, tool_mode="json", json_guide="prefill",
            tool_preamble={"get_weather": "Let me check the weather."},
        )  # fmt: skip
        tts = ScriptedTTS(clock, ms_per_char=10.0)
        p = VoicePipeline(
            ScriptedSTT(["is it raining in Berlin"], clock, delay=0.0),
            llm,
            tts,
            EnergyVAD(),
            system_prompt=SYSTEM,
            tools=[get_weather],
        )
        events: list[PipelineEvent] = []
        p.on_event(events.append)

        async def caller() -> None:
            media.inject(tone_frames(400, level_db=-15))
            await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
            media.hangup()

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=clock)
    assert [t for _, t in tts.requests] == ["Let me check the weather.", "It is rainy in Berlin."]
    (tool_event,) = [e for e in events if isinstance(e, AgentResponseEvent) and e.tool_calls]
    assert tts.requests[0][0] < tool_event.at  # said before the tool call was complete
    assert ran and tts.requests[0][0] < ran[0]
    history = [(m.role, m.content.strip()) for m in p.agent.history if m.role != "system"]
    assert history == [
        ("user", "is it raining in Berlin"),
        ("assistant", "Let me check the weather."),
        ("tool", "rainy"),
        ("assistant", "It is rainy in Berlin."),
    ]
    (metrics,) = p.metrics
    assert metrics.first_frame_out is not None and metrics.first_frame_out < tool_event.at
