"""examples/assistant.py on FakeAsterisk with the rule agent: the weather tool and the
hand-off to a person (the call really leaves for the dialplan's ``person``), typed in
through ``voxtra console``'s harness (the real pipeline, tools and handler)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from garbage import collector_off, cyclic_garbage

from voxtra import CallSession
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.providers.base import ChatMessage, ToolSpec
from voxtra.providers.rules import RulesAgent
from voxtra.testing.console import run_console
from voxtra.testing.modules import import_file

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _assistant() -> ModuleType:
    return import_file(
        Path(__file__).resolve().parents[2] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


async def _typed(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_the_rule_assistant_hands_the_caller_to_a_person(tmp_path: Path) -> None:
    with collector_off():
        await _hand_off(tmp_path)
        # Its pipeline's handlers hold neither the call nor the desk: no call is left
        # for the cyclic collector (tests/unit/test_call_garbage.py says why).
        assert cyclic_garbage((CallSession, VoicePipeline)) == []


async def _hand_off(tmp_path: Path) -> None:
    assistant = _assistant()
    lines: list[str] = []
    app = assistant.build_assistant(
        agent="rules",
        write=lines.append,
        greeting=None,
        app_name="assistant-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        ari_url="http://asterisk.invalid:8088",
    )
    out = io.StringIO()
    await run_console(
        app,
        extension="100",
        lines=_typed("is it raining in berlin today", "can i talk to a person please", "hello"),
        out=out,
    )
    text = out.getvalue()
    assert "agent: The weather in berlin is rainy, nine degrees." in text
    # The tool's Speak result is the answer, whichever agent asked for it.
    assert "agent: A person will take the call in a moment." in text
    assert "[transferred to person@voxtra-test]" in text
    assert text.rstrip().endswith("[the call left the app]")
    log = "\n".join(lines)
    assert "[tool] transfer_to_person({'reason': 'asked for a person'})" in log
    assert "conversation ended: handed off to a person" in log


@pytest.mark.parametrize(
    "text",
    ["can I talk to a person", "get me a human", "the operator please", "let me speak to someone"],
)
async def test_the_rule_agent_calls_the_handoff_tool(text: str) -> None:
    tool = ToolSpec("transfer_to_person", "hand-off", {"type": "object", "properties": {}})
    reply = RulesAgent().reply([ChatMessage("user", text)], [tool])
    assert not isinstance(reply, str) and reply.name == "transfer_to_person"
    # without the tool on offer it says so rather than pretending
    assert RulesAgent().reply([ChatMessage("user", text)]) == (
        "I cannot put you through right now, sorry."
    )
