from __future__ import annotations

import enum
from typing import Literal

import pytest

from voxtra.errors import ConfigError, ProviderError
from voxtra.pipeline.agent import Agent, ToolCallError, tool_spec
from voxtra.pipeline.testing import VirtualClock
from voxtra.providers.base import ToolCall

from .doubles import Reply, ScriptedLLM


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def weather(
    city: str,
    days: int,
    unit: Unit = Unit.C,
    detail: Literal["short", "long"] = "short",
    alerts: bool = False,
    tags: list[str] | None = None,
    threshold: float | None = None,
) -> str:
    """Get the weather forecast.

    Longer explanation that the LLM does not need.

    Args:
        city: City name, e.g. Paris.
        days: How many days
            ahead to forecast.
        unit: Temperature unit.
    """
    return f"{city}:{days}:{unit.value}:{detail}"


def test_schema_from_hints_and_docstring() -> None:
    spec = tool_spec(weather).spec
    assert spec.name == "weather"
    assert spec.description == "Get the weather forecast."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris."},
            "days": {"type": "integer", "description": "How many days ahead to forecast."},
            "unit": {
                "type": "string",
                "enum": ["celsius", "fahrenheit"],
                "description": "Temperature unit.",
                "default": "celsius",
            },
            "detail": {"type": "string", "enum": ["short", "long"], "default": "short"},
            "alerts": {"type": "boolean", "default": False},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            "threshold": {"type": ["number", "null"]},
        },
        "required": ["city", "days"],
    }


def test_rest_docstring_and_bad_tools() -> None:
    def lookup(order_id: str) -> str:
        """Find an order.

        :param order_id: The order number.
        """
        return order_id

    spec = tool_spec(lookup).spec
    assert spec.parameters["properties"]["order_id"]["description"] == "The order number."

    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def star(*args: int) -> None: ...

    def weird(x: object) -> None: ...

    for bad in (untyped, star, weird):
        with pytest.raises(ConfigError):
            tool_spec(bad)
    with pytest.raises(ConfigError, match="tool name"):
        tool_spec(lookup, name="has space")
    agent = Agent(None, tools=[lookup])
    with pytest.raises(ConfigError, match="already registered"):
        agent.add_tool(lookup)


async def test_history_is_per_agent_and_respond_records_it() -> None:
    clock = VirtualClock()
    clock.release()
    llm = ScriptedLLM([Reply(["Hi ", "Ann."]), Reply(["Hello ", "Bob."])], clock)
    a = Agent(llm, system_prompt="Be brief.")
    b = Agent(llm, system_prompt="Be brief.")
    ra = await a.respond("I am Ann")
    rb = await b.respond("I am Bob")
    assert (ra.text, rb.text) == ("Hi Ann.", "Hello Bob.")
    assert [(m.role, m.content) for m in a.history] == [
        ("system", "Be brief."),
        ("user", "I am Ann"),
        ("assistant", "Hi Ann."),
    ]
    assert all("Ann" not in m.content for m in b.history)
    assert all("Ann" not in m.content for m in llm.calls[1].messages)
    a.history.append(a.history[1])
    assert len(b.history) == 3


async def test_manual_tool_round_trip_and_continue() -> None:
    clock = VirtualClock()
    clock.release()
    call = ToolCall("t1", "weather", {"city": "Oslo", "days": 2, "unit": "fahrenheit"})
    llm = ScriptedLLM([Reply(tool_calls=(call,)), Reply(["Cold."])], clock)
    agent = Agent(llm, tools=[weather])
    first = await agent.respond("weather in Oslo?")
    assert first.text == "" and first.tool_calls == (call,)
    with pytest.raises(ToolCallError):
        agent.add_tool_result("nope", "x")
    result = await agent.call_tool(call)
    assert result == "Oslo:2:fahrenheit:short"  # the enum value came back as Unit.F
    agent.add_tool_result("t1", result)
    second = await agent.respond("")
    assert second.text == "Cold."
    assert [m.role for m in agent.history] == ["user", "assistant", "tool", "assistant"]
    assert llm.calls[1].messages[-1].role == "tool"  # no empty user message was added


async def test_automatic_tool_loop_and_errors_fed_back() -> None:
    clock = VirtualClock()
    clock.release()

    async def fails(x: int) -> int:
        raise ValueError("bad x")

    calls = [
        Reply(tool_calls=(ToolCall("1", "fails", {"x": 1}),)),
        Reply(tool_calls=(ToolCall("2", "nosuch", {}), ToolCall("3", "fails", {"y": 1}))),
        Reply(["Done."]),
    ]
    agent = Agent(ScriptedLLM(calls, clock), tools=[fails])
    final = await agent.respond_with_tools("go")
    assert final.text == "Done."
    tool_msgs = [m.content for m in agent.history if m.role == "tool"]
    assert tool_msgs == [
        "error: ValueError: bad x",
        "error: unknown tool 'nosuch'",
        "error: bad arguments (unknown: ['y'], missing: ['x'])",
    ]


async def test_arguments_a_tool_does_not_take_are_dropped() -> None:
    """A small model lends one tool's field to another (get_weather(city=..., day=...)
    beside a tool with a ``day``); the call has all it needs, so it runs."""
    clock = VirtualClock()
    clock.release()
    seen: list[str] = []

    def get_weather(city: str) -> str:
        seen.append(city)
        return "windy"

    calls = [
        Reply(tool_calls=(ToolCall("1", "get_weather", {"city": "Madrid", "day": "tomorrow"}),)),
        Reply(["Windy."]),
    ]
    agent = Agent(ScriptedLLM(calls, clock), tools=[get_weather])
    final = await agent.respond_with_tools("will it be windy in Madrid tomorrow")
    assert final.text == "Windy."
    assert seen == ["Madrid"]
    assert [m.content for m in agent.history if m.role == "tool"] == ["windy"]


async def test_tool_loop_stops_at_max_steps() -> None:
    clock = VirtualClock()
    clock.release()

    def ping() -> str:
        """Ping."""
        return "pong"

    loop = [Reply(tool_calls=(ToolCall(str(i), "ping", {}),)) for i in range(10)]
    llm = ScriptedLLM(loop, clock)
    agent = Agent(llm, tools=[ping], max_tool_steps=3)
    await agent.respond_with_tools("go")
    assert len(llm.calls) == 4
    assert agent.pending_tool_calls() == []  # the last call was answered as cancelled
    assert agent.history[-1].content == "error: tool step limit reached"


async def test_llm_failure_is_a_provider_error_and_leaves_no_empty_message() -> None:
    clock = VirtualClock()
    clock.release()
    agent = Agent(ScriptedLLM([Reply(["x"], fail_after=0)], clock))
    with pytest.raises(ProviderError, match="scripted-llm"):
        await agent.respond("hi")
    assert [m.role for m in agent.history] == ["user"]


def test_trim_last_assistant() -> None:
    agent = Agent(None, system_prompt="s")
    agent.history.append(agent.history[0].__class__("assistant", "One. Two. Three."))
    agent.trim_last_assistant("One.")
    assert agent.history[-1].content == "One."
    agent.trim_last_assistant("")
    assert [m.role for m in agent.history] == ["system"]


async def test_a_tool_that_does_not_answer_is_an_error_result_in_time() -> None:
    # No deadline on the tool step: a tool waiting on a server that never answers kept
    # the call silent (and the caller could not talk over it) until the hang-up.
    import anyio

    clock = VirtualClock()
    clock.release()

    async def lookup(order: str) -> str:
        await anyio.sleep_forever()
        return "never"

    calls = [Reply(tool_calls=(ToolCall("1", "lookup", {"order": "A7"}),)), Reply(["Sorry."])]
    agent = Agent(ScriptedLLM(calls, clock), tools=[lookup], tool_timeout=0.2)
    with anyio.fail_after(5):
        final = await agent.respond_with_tools("where is my order")
    assert final.text == "Sorry."
    assert [m.content for m in agent.history if m.role == "tool"] == [
        "error: no result within 0.2 s"
    ]
    with pytest.raises(ConfigError, match="tool_timeout"):
        Agent(None, tool_timeout=0)


async def test_tool_calls_left_unanswered_are_closed_before_the_next_question() -> None:
    # respond() returns tool calls without running them; a next question added after
    # them left a history OpenAI refuses (400) for every later request of the call.
    clock = VirtualClock()
    clock.release()
    call = ToolCall("t1", "weather", {"city": "Oslo", "days": 2})
    llm = ScriptedLLM([Reply(tool_calls=(call,)), Reply(["Hello again."])], clock)
    agent = Agent(llm, tools=[weather])
    await agent.respond("weather in Oslo?")
    second = await agent.respond("hello?")
    assert second.text == "Hello again."
    sent = [(m.role, m.content, m.tool_call_id) for m in llm.calls[1].messages]
    assert sent == [
        ("user", "weather in Oslo?", None),
        ("assistant", "", None),
        ("tool", "error: not run", "t1"),
        ("user", "hello?", None),
    ]
