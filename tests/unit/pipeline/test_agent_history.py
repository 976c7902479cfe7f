"""What a long call's LLM requests send: bounded, whole turns, a stable prefix.

Every request used to send the call's whole history: with the embedded model (4096-token
context) a call failed after ~54 turns (at 60: "request (4459 tokens) exceeds the
available context size"), and a cloud model was sent more, and billed more, at every turn.
"""

from __future__ import annotations

import itertools
import json

import pytest

from voxtra.errors import ConfigError
from voxtra.pipeline import VoicePipeline
from voxtra.pipeline.agent import Agent, Speak
from voxtra.pipeline.testing import VirtualClock
from voxtra.providers.base import ChatMessage, ToolCall

from .doubles import Reply, ScriptedLLM

SYSTEM = "You are the phone assistant of a shop. Answer in one short sentence."


def get_weather(city: str) -> str:
    """Today's weather in a city.

    Args:
        city: the city name.
    """
    return f"sunny in {city}, eighteen degrees"


def get_opening_hours(day: str) -> Speak:
    """When we are open on a day.

    Args:
        day: a weekday.
    """
    return Speak(f"On {day} we are open from nine until five.")


def _script(turns: int) -> tuple[list[str], list[Reply]]:
    """A call of ``turns`` questions like the demo's: a third use a tool the model words
    again, a third a tool that is the answer (``Speak``), a third plain answers."""
    questions: list[str] = []
    replies: list[Reply] = []
    for n in range(turns):
        if n % 3 == 0:
            questions.append(f"what is the weather like in city number {n} today")
            replies.append(Reply(tool_calls=(ToolCall(f"w{n}", "get_weather", {"city": f"c{n}"}),)))
            replies.append(Reply([f"It is sunny in c{n} today, eighteen degrees."]))
        elif n % 3 == 1:
            questions.append(f"and are you open on day {n}")
            replies.append(
                Reply(tool_calls=(ToolCall(f"h{n}", "get_opening_hours", {"day": "Monday"}),))
            )
        else:
            questions.append("okay thank you, that is helpful")
            replies.append(Reply(["You are welcome. Anything else I can help you with?"]))
    return questions, replies


def _chars(messages: list[ChatMessage]) -> int:
    """The characters of the conversation a request carries (its text and tool calls)."""
    return sum(
        len(m.content) + sum(len(c.name) + len(json.dumps(c.arguments)) for c in m.tool_calls)
        for m in messages
        if m.role != "system"
    )


def _assert_valid(messages: list[ChatMessage]) -> None:
    """What OpenAI accepts: each tool result right after the calls it answers, and each
    assistant's tool calls all answered."""
    assert messages[0].role == "system" and messages[0].content == SYSTEM
    assert messages[1].role == "user", [m.role for m in messages[:3]]
    pending: set[str] = set()
    for m in messages[1:]:
        if m.role == "tool":
            assert m.tool_call_id in pending, f"a tool result without its call: {m}"
            pending.discard(m.tool_call_id)
            continue
        assert not pending, f"tool calls {pending} not answered before a {m.role} message"
        if m.role == "assistant":
            pending = {c.id for c in m.tool_calls}


async def _call(agent: Agent, questions: list[str]) -> None:
    for q in questions:
        await agent.respond_with_tools(q)


async def test_a_long_call_sends_a_bounded_history_and_keeps_the_whole_transcript() -> None:
    clock = VirtualClock()
    clock.release()
    questions, replies = _script(80)
    llm = ScriptedLLM(replies, clock, delay=0)
    agent = Agent(llm, system_prompt=SYSTEM, tools=[get_weather, get_opening_hours])
    await _call(agent, questions)

    sizes = [_chars(c.messages) for c in llm.calls]
    # The history of 80 turns is ~11,000 characters; a request stops growing with it.
    assert max(sizes[len(sizes) // 2 :]) <= max(sizes[: len(sizes) // 2]), sizes
    assert _chars(agent.history) > 2 * max(sizes)
    assert agent.max_history_chars is not None
    assert max(sizes) <= agent.max_history_chars
    for call in llm.calls:
        _assert_valid(call.messages)
    last = llm.calls[-1].messages
    assert last[-1].content == questions[-1]
    # The newest turns are what is sent, up to the last question (its tool call, result
    # and spoken answer came after).
    sent = [m.content for m in last[1:]]
    assert sent == [m.content for m in agent.history[-len(sent) - 3 : -3]]
    # The history itself is the whole call, every question and answer in order.
    assert [m.content for m in agent.history if m.role == "user"] == questions
    assert len([m for m in agent.history if m.role == "tool"]) == 54


async def test_requests_extend_the_last_one_until_the_next_trim() -> None:
    """Dropping one turn per request would change the start of every request, and
    llama-server (one prompt cache, reused up to the first changed token) would compute
    the whole history again at every turn: turns are dropped in chunks instead."""
    clock = VirtualClock()
    clock.release()
    questions, replies = _script(160)
    llm = ScriptedLLM(replies, clock, delay=0)
    agent = Agent(
        llm, system_prompt=SYSTEM, tools=[get_weather, get_opening_hours], max_history_chars=6000
    )
    await _call(agent, questions)

    requests = [c.messages for c in llm.calls]
    trims = [
        n
        for n in range(1, len(requests))
        if [(m.role, m.content) for m in requests[n][: len(requests[n - 1])]]
        != [(m.role, m.content) for m in requests[n - 1]]
    ]
    assert len(trims) >= 3, trims
    questions_between = [
        sum(1 for c in llm.calls[a:b] if c.messages[-1].role == "user")
        for a, b in itertools.pairwise(trims)
    ]
    # Half the limit is dropped at once: 3,000 characters, 9 of the largest turns here.
    assert min(questions_between) >= 9, questions_between


async def test_a_tool_call_is_never_sent_without_its_result() -> None:
    """The turn boundary a trim picks is a user message: a large tool result cannot be
    left behind by its call, nor the call by its result."""
    clock = VirtualClock()
    clock.release()
    big = "x" * 700

    def search(query: str) -> str:
        """Search the catalogue.

        Args:
            query: what to look for.
        """
        return big

    replies: list[Reply] = []
    questions: list[str] = []
    for n in range(12):
        questions.append(f"look up item {n}")
        calls = (
            ToolCall(f"a{n}", "search", {"query": "a"}),
            ToolCall(f"b{n}", "search", {"query": "b"}),
        )
        replies += [Reply(tool_calls=calls), Reply(["Found it."])]
    llm = ScriptedLLM(replies, clock, delay=0)
    agent = Agent(llm, system_prompt=SYSTEM, tools=[search], max_history_chars=2000)
    await _call(agent, questions)
    for call in llm.calls:
        _assert_valid(call.messages)
    # One turn (two 700-character results) is more than half the limit: each question
    # is sent with its own turn only, whole.
    last = llm.calls[-1].messages
    assert [m.role for m in last] == ["system", "user", "assistant", "tool", "tool"]


async def test_a_turn_larger_than_the_limit_is_sent_whole() -> None:
    clock = VirtualClock()
    clock.release()
    llm = ScriptedLLM([Reply(["First."]), Reply(["Second."])], clock, delay=0)
    agent = Agent(llm, system_prompt=SYSTEM, max_history_chars=100)
    await agent.respond("a short question")
    long_question = "and a question of many words " * 10
    await agent.respond(long_question)
    assert [(m.role, m.content) for m in llm.calls[1].messages] == [
        ("system", SYSTEM),
        ("user", long_question),
    ]


def test_a_turn_whose_tool_results_pass_the_limit_keeps_its_question() -> None:
    """Found in review: with the only user message first in what is sent, the trim
    fell back to any message and cut the question off its own tool steps."""
    agent = Agent(None, system_prompt=SYSTEM, max_history_chars=400)
    question = ChatMessage("user", "What appointments do I have next week?")
    agent.history += [
        question,
        ChatMessage("assistant", "", [ToolCall("c1", "appointments", {"week": "next"})]),
        ChatMessage("tool", "x" * 650, tool_call_id="c1"),
    ]
    assert agent.request_messages()[1] is question  # the first step
    # A later turn trims up to its question; its further tool steps still send it.
    agent.history += [
        ChatMessage("assistant", "You have three."),
        ChatMessage("user", "And the one on Friday?"),
    ]
    friday = agent.history[-1]
    assert agent.request_messages()[1] is friday
    for n in (2, 3):
        agent.history += [
            ChatMessage("assistant", "", [ToolCall(f"c{n}", "detail", {"n": n})]),
            ChatMessage("tool", "y" * 300, tool_call_id=f"c{n}"),
        ]
        assert agent.request_messages()[1] is friday


async def test_the_trim_point_survives_a_replaced_history_and_none_sends_all() -> None:
    """``SecureInput`` replaces ``agent.history`` by a redacting list of the same
    messages: the next request starts where the last one did. ``None``: no limit."""
    clock = VirtualClock()
    clock.release()
    questions, replies = _script(40)
    llm = ScriptedLLM(replies, clock, delay=0)
    agent = Agent(
        llm, system_prompt=SYSTEM, tools=[get_weather, get_opening_hours], max_history_chars=1500
    )
    await _call(agent, questions)
    before = agent.request_messages()
    agent.history = list(agent.history)
    assert [id(m) for m in agent.request_messages()] == [id(m) for m in before]

    agent.max_history_chars = None
    assert agent.request_messages() == agent.history
    with pytest.raises(ConfigError, match="max_history_chars"):
        Agent(None, max_history_chars=0)


async def test_a_call_the_application_only_says_into_is_bounded_too() -> None:
    """Without user messages (``say()`` only) any message but a tool result may start."""
    agent = Agent(None, system_prompt=SYSTEM, max_history_chars=500)
    for n in range(40):
        agent.history.append(ChatMessage("assistant", f"announcement number {n} of the day"))
    sent = agent.request_messages()
    assert sent[0].content == SYSTEM
    assert sent[-1].content == "announcement number 39 of the day"
    assert 0 < _chars(sent) <= 500


def test_the_pipeline_passes_the_limit_to_its_agent() -> None:
    assert VoicePipeline(max_history_chars=1234).agent.max_history_chars == 1234
    assert VoicePipeline().agent.max_history_chars == Agent(None).max_history_chars
