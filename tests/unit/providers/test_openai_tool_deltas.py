"""Streamed tool calls from OpenAI-compatible servers that do not number them: Gemini's
OpenAI endpoint, older Ollama and SambaNova send deltas without ``index`` (a KeyError
failed every turn that used a tool), or with ``"index": null`` (two calls merged)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from voxtra.providers.base import ChatMessage, ToolCall, ToolSpec
from voxtra.providers.openai_llm import OpenAILLM

TOOLS = [ToolSpec("a", "first", {"type": "object"}), ToolSpec("b", "second", {"type": "object"})]


class _Chunks:
    """What ``OpenAILLM._stream`` hands over: chunks as the SDK's dicts, and close()."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks = chunks

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._each()

    async def _each(self) -> AsyncIterator[dict[str, Any]]:
        for chunk in self.chunks:
            yield chunk

    async def close(self) -> None:
        pass


def _delta(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": list(calls)}}]}


def _call(**fields: Any) -> dict[str, Any]:
    return {"type": "function", **fields}


async def _tool_calls(chunks: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    llm = OpenAILLM("sk-test")

    async def stream(request: dict[str, Any]) -> _Chunks:
        return _Chunks(chunks)

    llm._stream = stream  # type: ignore[method-assign]
    out = [c async for c in llm.generate([ChatMessage("user", "hi")], TOOLS)]
    return tuple(call for chunk in out for call in chunk.tool_calls)


async def test_whole_calls_without_an_index() -> None:
    calls = await _tool_calls(
        [
            _delta(_call(id="c1", function={"name": "a", "arguments": '{"x": 1}'})),
            _delta(_call(id="c2", function={"name": "b", "arguments": "{}"})),
        ]
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [("c1", "a", {"x": 1}), ("c2", "b", {})]


async def test_null_indexes_and_arguments_in_pieces() -> None:
    calls = await _tool_calls(
        [
            _delta(_call(index=None, id="c1", function={"name": "a", "arguments": '{"x"'})),
            _delta(_call(index=None, function={"arguments": ": 2}"})),
            _delta(_call(index=None, id="c2", function={"name": "b", "arguments": "{}"})),
        ]
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [("c1", "a", {"x": 2}), ("c2", "b", {})]


async def test_numbered_calls_as_openai_sends_them() -> None:
    calls = await _tool_calls(
        [
            _delta(_call(index=0, id="c1", function={"name": "a", "arguments": ""})),
            _delta(_call(index=1, id="c2", function={"name": "b", "arguments": "{}"})),
            _delta({"index": 0, "function": {"arguments": '{"x": 3}'}}),
        ]
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [("c1", "a", {"x": 3}), ("c2", "b", {})]
