"""LocalLLM's wiring, without a model: what it tells llama-server and the provider."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voxtra import VoiceConfig, VoxtraApp
from voxtra.local import QWEN_CODER_1_5B, LlamaServer, LocalLLM
from voxtra.pipeline import Agent, PipelineEvent, SpeechStartedEvent, TurnMetrics
from voxtra.providers.base import ChatMessage
from voxtra.testing.modules import import_file


def _assistant() -> ModuleType:
    return import_file(
        Path(__file__).resolve().parents[2] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


def test_server_args_reach_llama_server_and_tools_get_a_preamble(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / QWEN_CODER_1_5B.filename).write_bytes(b"gguf")
    local = LocalLLM(cache=tmp_path, server_args=("-fa", "on"))
    command = local.server.command()
    assert command[-2:] == ["-fa", "on"]
    assert command[command.index("-t") + 1] == "1"
    # A tool turn is two model requests: something is said as soon as a tool is named.
    assert local.llm.tool_preamble == "One moment."
    assert LocalLLM(cache=tmp_path, tool_preamble=None).llm.tool_preamble is None


def test_the_demo_assistant_says_what_each_tool_is_about_to_do() -> None:
    assistant = _assistant()
    app = assistant.build_assistant(agent="local", ari_url="http://asterisk.invalid:8088")
    preamble = app.voice.llm.tool_preamble
    assert preamble == assistant.TOOL_PREAMBLES
    assert set(preamble) >= {"get_weather", "transfer_to_person", "*"}


class _Pipeline:
    def __init__(self) -> None:
        self.handlers: list[Callable[[PipelineEvent], None]] = []
        self.agent = Agent(None, system_prompt="hi")

    def on_event(self, handler: Callable[[PipelineEvent], None]) -> None:
        self.handlers.append(handler)

    def emit(self, event: PipelineEvent) -> None:
        for handler in self.handlers:
            handler(event)


class _Call:
    id = "c1"

    def __init__(self) -> None:
        self.spawned: list[str] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        coro.close()  # not run: only what would run is counted
        self.spawned.append(name or "")


def test_the_conversation_is_warmed_after_each_turn_and_once_the_caller_first_speaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool's Speak answer is history llama-server never computed: the next turn paid
    for it (1.7 s to first audio in the demo against 0.6 s warmed)."""
    seen: list[str] = []
    app = VoxtraApp("http://asterisk.invalid:8088", "u", "p", environ={})
    app.voice = VoiceConfig(on_pipeline=lambda call, pipeline: seen.append(call.id))
    local = LocalLLM(cache=tmp_path)
    local.attach(app)
    monkeypatch.setattr(LlamaServer, "running", property(lambda self: True))
    call, pipeline = _Call(), _Pipeline()
    assert app.voice.on_pipeline is not None
    app.voice.on_pipeline(call, pipeline)  # type: ignore[arg-type]
    assert seen == ["c1"]  # the app's own hook still runs
    pipeline.emit(SpeechStartedEvent())  # the greeting is in the history by now
    pipeline.emit(SpeechStartedEvent())  # later onsets: nothing new to warm
    pipeline.emit(TurnMetrics())
    assert call.spawned == ["local-llm-warm", "local-llm-warm"]


async def test_a_long_conversation_is_warmed_as_its_next_request_sends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``max_history_chars`` the oldest turns are not sent: warming them filled the
    server's one prompt cache with a prefix no request has."""
    local = LocalLLM(cache=tmp_path)
    warmed: list[list[ChatMessage]] = []

    async def warm_up(*, tools: Any = None, history: list[ChatMessage]) -> None:
        warmed.append(history)

    monkeypatch.setattr(local.llm, "warm_up", warm_up)
    agent = Agent(None, system_prompt="You answer briefly.", max_history_chars=400)
    for turn in range(30):
        agent.history.append(ChatMessage(role="user", content=f"question number {turn}?"))
        agent.history.append(ChatMessage(role="assistant", content=f"answer number {turn}."))
    await local.warm_conversation(agent)
    [history] = warmed
    assert history == agent.request_messages()
    assert history[0].role == "system" and len(history) < len(agent.history)
    assert history[-1] is agent.history[-1]
