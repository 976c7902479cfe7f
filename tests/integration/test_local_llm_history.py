"""A long call with the local LLM for real: llama-server (4096-token context),
Qwen2.5-Coder-1.5B, the demo's system prompt and tools.

Every request used to send the call's whole history: after ~54 turns like the demo's,
the server refused each one (at 60: "request (4459 tokens) exceeds the available context
size (4096 tokens)") and the caller heard only the fallback for the rest of the call.
Here a call of 60 such turns goes on answering.

Marked ``llm`` like ``test_local_llm.py``. The limit is small (1,500 characters, ~350
tokens) so that the server computes little on this slow box; the default's figures are
measured in ``docs/pipeline.md``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from voxtra.local import LocalLLM
from voxtra.pipeline import Agent, tool_spec
from voxtra.providers.base import ChatMessage, ToolCall
from voxtra.testing.asterisk import AsteriskSandbox
from voxtra.testing.modules import import_file

pytestmark = [
    pytest.mark.llm,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.skipif(os.geteuid() != 0, reason="llama-server runs in a chroot (root)"),
]


def _assistant() -> ModuleType:
    return import_file(
        Path(__file__).resolve().parents[2] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


assistant = _assistant()
TOOLS = assistant.TOOLS


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LocalLLM]:
    llm = LocalLLM()
    llm.prepare(AsteriskSandbox().tarball)  # cached by scripts/bootstrap
    await llm.start(system_prompt=assistant.SYSTEM_PROMPT, tools=[tool_spec(t).spec for t in TOOLS])
    try:
        yield llm
    finally:
        await llm.aclose()


def _turn(n: int) -> list[ChatMessage]:
    """One past turn of the demo: the weather (a tool the model words), the hours (a
    tool whose result is the answer), or thanks."""
    if n % 3 == 0:
        return [
            ChatMessage("user", "what's the weather like in Paris today"),
            ChatMessage(
                "assistant", "One moment.", [ToolCall(f"w{n}", "get_weather", {"city": "Paris"})]
            ),
            ChatMessage("tool", "sunny, eighteen degrees", tool_call_id=f"w{n}"),
            ChatMessage("assistant", "It is sunny in Paris today, eighteen degrees."),
        ]
    if n % 3 == 1:
        return [
            ChatMessage("user", "and are you open on Saturday"),
            ChatMessage(
                "assistant", "", [ToolCall(f"h{n}", "get_opening_hours", {"day": "Saturday"})]
            ),
            ChatMessage("tool", "On Saturday and Sunday we are closed.", tool_call_id=f"h{n}"),
            ChatMessage("assistant", "On Saturday and Sunday we are closed."),
        ]
    return [
        ChatMessage("user", "okay thank you that is helpful"),
        ChatMessage("assistant", "You're welcome. Is there anything else I can help you with?"),
    ]


def _prompt_tokens(local: LocalLLM, messages: list[ChatMessage]) -> int:
    """The tokens of the prompt the server would compute for ``messages``."""
    request = local.llm.json_request(messages, [tool_spec(t).spec for t in TOOLS])

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        req = urllib.request.Request(
            local.server.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            answer = json.load(response)
        assert isinstance(answer, dict)
        return answer

    prompt = post("/apply-template", {"messages": request["messages"]})["prompt"]
    tokens = post("/tokenize", {"content": prompt})["tokens"]
    assert isinstance(tokens, list)
    return len(tokens)


def _tool_calls(agent: Agent, since: int) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, dict(c.arguments)) for m in agent.history[since:] for c in m.tool_calls]


async def test_a_call_of_60_turns_goes_on_answering(local: LocalLLM) -> None:
    past = [m for n in range(60) for m in _turn(n)]
    agent = Agent(local.llm, system_prompt=assistant.SYSTEM_PROMPT, tools=TOOLS, history=past)
    agent.max_history_chars = 1500  # small, for this slow box (see the module docstring)
    whole = _prompt_tokens(local, [*agent.history, ChatMessage("user", "is it raining in Berlin")])
    assert whole > local.server.context  # the whole call no longer fits

    before = len(agent.history)
    first = await agent.respond_with_tools("is it raining in Berlin")
    assert _tool_calls(agent, before) == [("get_weather", {"city": "Berlin"})]
    assert first.text

    before = len(agent.history)
    hours = await agent.respond_with_tools("are you open on Sunday")
    assert _tool_calls(agent, before)[0][0] == "get_opening_hours"
    assert "closed" in hours.text.lower(), hours.text

    before = len(agent.history)
    await agent.respond_with_tools("and what is the weather in London")
    assert _tool_calls(agent, before) == [("get_weather", {"city": "London"})]

    sent = agent.request_messages()
    assert sent[0].content == assistant.SYSTEM_PROMPT
    assert _prompt_tokens(local, [*sent, ChatMessage("user", "thanks")]) < whole // 3
    # The history is the whole call: the 60 turns given and the 3 asked here.
    assert agent.history[1 : 1 + len(past)] == past
    assert sum(1 for m in agent.history if m.role == "user") == 63
