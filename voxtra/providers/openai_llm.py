"""Chat LLMs over the OpenAI API (``voxtra[openai]``): OpenAI itself, or any compatible
server through ``base_url`` (Ollama, llama.cpp's server, vLLM, ...).

Answers stream token by token; tool calls arrive as fragments of JSON spread over many
deltas, so they are accumulated and handed over, parsed, once the stream ends. Retries
default to 0: on a phone call a late answer is worse than a clear failure (the pipeline
speaks a fallback), but ``max_retries`` is configurable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from voxtra.config import secret_value
from voxtra.errors import ConfigError, ProviderError
from voxtra.providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec

__all__ = ["OpenAILLM"]

logger = logging.getLogger(__name__)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Voxtra history in the chat completions wire shape."""
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.tool_calls:
            entry["content"] = m.content or None
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_call_id"] = m.tool_call_id or ""
        out.append(entry)
    return out


def to_openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


class OpenAILLM:
    """Streaming chat completions with tools. ``options`` go to every request as is
    (``temperature``, ``max_tokens``, ...)."""

    name = "openai"

    def __init__(
        self,
        api_key: str | SecretStr,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        max_retries: int = 0,
        timeout: float = 30.0,
        **options: Any,
    ) -> None:
        try:
            from openai import AsyncOpenAI
        except ImportError as exc:
            raise ConfigError("OpenAILLM needs: pip install 'voxtra[openai]'") from exc
        if not secret_value(api_key):
            raise ConfigError("OpenAILLM needs an api_key (any string for local servers)")
        self.model = model
        self.options = options
        self._client = AsyncOpenAI(
            api_key=secret_value(api_key),
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
        )

    async def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        """Stream text chunks, then one chunk with the tool calls (if any).
        Closing the iterator closes the HTTP stream, which stops generation upstream."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "stream": True,
            **self.options,
        }
        if tools:
            request["tools"] = to_openai_tools(tools)
        try:
            stream = await self._client.chat.completions.create(**request)
        except Exception as exc:
            raise ProviderError(self.name, _describe(exc)) from exc
        calls: dict[int, _PartialCall] = {}
        try:
            async for chunk in stream:
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        yield LLMChunk(text=delta.content)
                    for tc in delta.tool_calls or ():
                        part = calls.setdefault(tc.index, _PartialCall())
                        if tc.id:
                            part.id = tc.id
                        if tc.function is not None:
                            part.name += tc.function.name or ""
                            part.arguments += tc.function.arguments or ""
        except Exception as exc:
            raise ProviderError(self.name, f"stream failed: {_describe(exc)}") from exc
        finally:
            await stream.close()
        if calls:
            yield LLMChunk(tool_calls=tuple(self._parse(calls[i]) for i in sorted(calls)))

    def _parse(self, part: _PartialCall) -> ToolCall:
        try:
            args = json.loads(part.arguments) if part.arguments.strip() else {}
        except ValueError as exc:
            raise ProviderError(
                self.name, f"tool call {part.name!r} has invalid JSON arguments: {exc}"
            ) from exc
        if not isinstance(args, dict):
            raise ProviderError(self.name, f"tool call {part.name!r} arguments are not an object")
        return ToolCall(part.id, part.name, args)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"HTTP {status}: {message}" if status is not None else f"{type(exc).__name__}: {message}"
