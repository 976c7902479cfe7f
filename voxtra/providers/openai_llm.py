"""Chat LLMs over the OpenAI API (``voxtra[openai]``): OpenAI itself, or any compatible
server through ``base_url`` (Ollama, llama.cpp's server, vLLM, ...).

Answers stream token by token; tool calls arrive as fragments of JSON spread over many
deltas, so they are accumulated and handed over, parsed, once the stream ends. Retries
default to 0: on a phone call a late answer is worse than a clear failure (the pipeline
speaks a fallback), but ``max_retries`` is configurable.

``tool_mode="json"`` is for models that do not emit native tool calls (measured with
Qwen2.5-Coder 0.5B/1.5B on llama.cpp's server: ``tools`` gave no ``tool_calls``, not
even with ``tool_choice: required``). The tools are described in the system message and
the answer is constrained by a ``response_format`` JSON schema: one object whose first
field ``action`` is ``"say"`` (with ``text``) or a tool's name (with ``arguments``). The
object is parsed as it streams, so the spoken ``text`` still reaches TTS sentence by
sentence. The tool list lives in the system message, the one part of the prompt that
never changes during a call: a server with a prompt cache keeps it as a warm prefix
(:meth:`OpenAILLM.warm_up`; 3.8 s to the first token fresh, 0.25 s cached, 1.5B).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import SecretStr

from voxtra.config import secret_value
from voxtra.errors import ConfigError, ProviderError
from voxtra.pipeline.pipeline import ProviderTimeout
from voxtra.providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec
from voxtra.providers.http import ScopedSdk, seconds_text

__all__ = ["OpenAILLM", "json_tool_instructions", "json_tool_schema"]

logger = logging.getLogger(__name__)

_ids = itertools.count(1)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def _aiohttp_client() -> Any:
    """The OpenAI SDK's own client on aiohttp (its ``aiohttp`` extra; it raises when
    that is not installed, and the SDK's default client is used)."""
    from openai import DefaultAioHttpClient

    return DefaultAioHttpClient()


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


_REQUEST_OPTIONS = {
    "extra_headers": "headers",
    "extra_query": "params",
    "extra_body": "extra_json",
    "timeout": "timeout",
}
"""Arguments of the SDK's ``create()`` that are not part of the JSON body: the name each
has in the SDK's request options (``AsyncOpenAI.post(options=...)``)."""


def _split_request(request: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``create()``-style request as the JSON body and the SDK's request options."""
    body = dict(request)
    options = {name: body.pop(key) for key, name in _REQUEST_OPTIONS.items() if key in body}
    return body, options


def _deltas(chunk: object) -> list[Mapping[str, Any]]:
    """The ``delta`` of each choice of one streamed ``chat.completion.chunk`` (a dict as
    the SDK decoded it from the event's JSON)."""
    if not isinstance(chunk, Mapping):
        raise TypeError(f"a stream chunk is not an object: {chunk!r:.200}")
    return [choice.get("delta") or {} for choice in chunk.get("choices") or ()]


ToolMode = Literal["native", "json"]
JsonGuide = Literal["schema", "prefill"]

_PREFILL = '{"action": "'
_PREFILL_SAY = '{"action": "say", "text": "'


def json_tool_instructions(tools: Sequence[ToolSpec]) -> str:
    """The system-message text that describes the JSON reply and the tools (json mode).

    Deterministic for a given tool list, so the system message is a stable prefix."""
    lines = [
        "Reply with one JSON object and nothing else:",
        '{"action": "say", "text": "<what you say to the caller>"} to speak, or',
        '{"action": "<tool name>", "arguments": {...}} to call a tool; its result comes '
        "back to you, then you say the answer.",
    ]
    if tools:
        lines.append(
            "Call a tool whenever one fits the request: never make up what a tool would "
            "tell you. Tools:"
        )
        for t in tools:
            props = t.parameters.get("properties", {})
            args = ", ".join(
                f'"{name}": {schema.get("type", "value")}'
                + (f" ({schema['description']})" if schema.get("description") else "")
                for name, schema in props.items()
            )
            lines.append(f"- {t.name}: {t.description} Arguments: {{{args}}}")
    return "\n".join(lines)


def json_tool_schema(tools: Sequence[ToolSpec], *, say_only: bool = False) -> dict[str, Any]:
    """The ``response_format`` schema: ``action`` first, then ``text`` or ``arguments``.

    ``say_only`` (after a tool result) leaves only ``say``: the model reports the
    result instead of calling the same tool again."""
    say = {
        "type": "object",
        "properties": {"action": {"const": "say"}, "text": {"type": "string"}},
        "required": ["action", "text"],
    }
    options: list[dict[str, Any]] = [say]
    if not say_only:
        for t in tools:
            arguments = dict(t.parameters) or {"type": "object"}
            options.append(
                {
                    "type": "object",
                    "properties": {"action": {"const": t.name}, "arguments": arguments},
                    "required": ["action", "arguments"],
                }
            )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _json_messages(
    messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
) -> list[dict[str, Any]]:
    """The history for json mode: tool calls as the JSON the model wrote, tool results
    as user-role notes (every chat template accepts those; not all accept ``tool``)."""
    instructions = json_tool_instructions(tools)
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            for c in m.tool_calls:
                action = {"action": c.name, "arguments": c.arguments}
                out.append({"role": "assistant", "content": json.dumps(action)})
        elif m.role == "assistant":
            out.append(
                {"role": "assistant", "content": json.dumps({"action": "say", "text": m.content})}
            )
        elif m.role == "tool":
            out.append({"role": "user", "content": f"(tool result) {m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
    else:
        out.insert(0, {"role": "system", "content": instructions})
    return out


class _ReplyParser:
    """Reads the streamed JSON reply: the action as soon as it is complete, then the
    characters of ``text`` as they arrive (decoded, escapes included). A reply that does
    not start with ``{`` (a server ignoring ``response_format``) is passed through as
    speech."""

    _ACTION = re.compile(r'\s*\{\s*"action"\s*:\s*"((?:[^"\\]|\\.)*)"')
    _TEXT = re.compile(r',\s*"text"\s*:\s*"')

    def __init__(self) -> None:
        self.buffer = ""
        self.action: str | None = None
        self.plain = False
        self._text_at: int | None = None  # where the text string's characters start
        self._emitted = 0  # characters of the raw string already decoded and yielded
        self._text_done = False
        self._rest = 0  # where the JSON goes on after the action

    def feed(self, delta: str) -> str:
        """Add a delta; return the newly readable spoken text (may be "")."""
        self.buffer += delta
        if self.plain:
            return delta
        if self.action is None:
            stripped = self.buffer.lstrip()
            if stripped and not stripped.startswith("{"):
                self.plain = True
                return self.buffer
            m = self._ACTION.match(self.buffer)
            if m is None:
                return ""
            self.action = json.loads(f'"{m.group(1)}"')
            self._rest = m.end()
        if self.action != "say" or self._text_done:
            return ""
        if self._text_at is None:
            m = self._TEXT.match(self.buffer, self._rest)
            if m is None:
                return ""
            self._text_at = m.end()
        return self._decode()

    def _decode(self) -> str:
        assert self._text_at is not None
        raw = self.buffer[self._text_at + self._emitted :]
        out: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch == '"':
                self._text_done = True
                break
            if ch == "\\":
                if i + 1 >= len(raw):
                    break  # the escape's other half is still on its way
                if raw[i + 1] == "u":
                    if i + 6 > len(raw):
                        break
                    piece = raw[i : i + 6]
                    i += 6
                else:
                    piece = raw[i : i + 2]
                    i += 2
                try:
                    out.append(json.loads(f'"{piece}"'))
                except ValueError:
                    out.append(piece)
                continue
            out.append(ch)
            i += 1
        self._emitted += i
        return "".join(out)

    def complete(self) -> bool:
        """Whether the buffer already holds one whole JSON object (what follows it, if
        the model goes on unconstrained, is not wanted)."""
        if self.plain or not self.buffer.rstrip().endswith("}"):
            return False
        try:
            self.result()
        except ValueError:
            return False
        return True

    def result(self) -> dict[str, Any]:
        """The reply's first JSON object, parsed."""
        try:
            reply, _ = json.JSONDecoder().raw_decode(self.buffer.lstrip())
        except ValueError as exc:
            raise ValueError(
                f"the reply is not one JSON object: {exc}: {self.buffer[:200]!r}"
            ) from exc
        if not isinstance(reply, dict) or not isinstance(reply.get("action"), str):
            raise ValueError(f"the reply has no action: {self.buffer[:200]!r}")
        return reply


class OpenAILLM:
    """Streaming chat completions with tools. ``options`` go to every request as is
    (``temperature``, ``max_tokens``, ...).

    ``tool_mode``: ``"native"`` (the API's ``tools``, the default) or ``"json"`` (a
    ``response_format`` JSON schema, for models without native tool calls; see the
    module's docstring). Choose per model.

    ``json_guide`` (json mode): ``"schema"`` constrains the reply with the
    ``response_format`` schema (any server that supports it); ``"prefill"`` sends no
    schema and starts the reply itself (a last assistant message ``{"action": "``,
    or ``{"action": "say", "text": "`` after a tool result), which llama.cpp's server
    continues. Measured on Qwen2.5-Coder-1.5B, 6 phone questions: the same actions and
    arguments both ways, 0.5-1.0 s less per request with ``prefill`` (1.35 -> 0.59 s,
    2.05 -> 1.03 s: the schema's grammar costs per request and per token). A reply
    that is not valid JSON is a ``ProviderError``, as in schema mode.

    ``tool_preamble`` (json mode): a short sentence streamed as the answer's text the
    moment the reply's ``action`` names a tool, so the caller hears it while the tool's
    arguments are written, the tool runs and the model is asked again (a tool turn is
    two requests: without it, the first audio waits for all of that). It becomes the
    assistant message's text (the history holds what the caller heard) but is not
    shown to the model as its own words: the request carries the tool call as the JSON
    it wrote, so the prompt stays as the model's examples teach it."""

    name = "openai"

    def __init__(
        self,
        api_key: str | SecretStr,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        max_retries: int = 0,
        timeout: float = 30.0,
        tool_mode: ToolMode = "native",
        json_guide: JsonGuide = "schema",
        tool_preamble: str | Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        try:
            from openai import AsyncOpenAI, AsyncStream
        except ImportError as exc:
            raise ConfigError("OpenAILLM needs: pip install 'voxtra[openai]'") from exc
        if not secret_value(api_key):
            raise ConfigError("OpenAILLM needs an api_key (any string for local servers)")
        if tool_mode not in ("native", "json"):
            raise ConfigError(f"OpenAILLM: tool_mode must be 'native' or 'json', not {tool_mode!r}")
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        if json_guide not in ("schema", "prefill"):
            raise ConfigError(
                f"OpenAILLM: json_guide must be 'schema' or 'prefill', not {json_guide!r}"
            )
        self.tool_mode: ToolMode = tool_mode
        self.json_guide: JsonGuide = json_guide
        self.tool_preamble = tool_preamble
        """What is said as soon as a json-mode reply names a tool (``str``: for any
        tool; a mapping: per tool name, ``"*"`` for the others; None: nothing)."""
        self.options = options
        self._client = AsyncOpenAI(
            api_key=secret_value(api_key),
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
        )
        # Inside an app, the same key, URL, retries and timeout on the app's shared
        # aiohttp-backed client (voxtra.providers.http: about half the CPU a streamed
        # answer costs through the SDK's default stack).
        client = self._client
        self._scoped = ScopedSdk(
            client, "openai", _aiohttp_client, lambda http: client.with_options(http_client=http)
        )
        self._stream_cls = AsyncStream[object]

    def _sdk(self) -> Any:
        """The SDK client for this request (see ``_scoped``)."""
        return self._scoped.get()

    async def _stream(self, request: Mapping[str, Any]) -> Any:
        """Start a streamed completion through the SDK (its HTTP client, headers, retries,
        errors and SSE decoding), each chunk handed over as the dict its JSON decodes to.

        ``chat.completions.create()`` does the same plus two things that cost CPU and
        change nothing here: it runs the request through its type-driven transform (an
        identity for chat parameters: none has an alias or a format) and builds each
        chunk as pydantic models (``construct_type``, typing introspection per field).
        Measured (bench/agent_density.py's answer, 15 chunks, against FakeOpenAI in
        another process, process CPU per request, 3 x 60 alternated, 2-core box at load
        1.5): 2,456-3,496 us through ``create()``, 1,113-1,622 us this way; at N=46
        agent calls that was about a tenth of the process's CPU."""
        body, options = _split_request(request)
        return await self._sdk().post(
            "/chat/completions",
            body=body,
            cast_to=object,
            stream=True,
            stream_cls=self._stream_cls,
            options=cast(Any, options),
        )

    async def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        """Stream text chunks, then one chunk with the tool calls (if any).
        Closing the iterator closes the HTTP stream, which stops generation upstream."""
        if self.tool_mode == "json":
            async for chunk in self._generate_json(messages, tools):
                yield chunk
            return
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "stream": True,
            **self.options,
        }
        if tools:
            request["tools"] = to_openai_tools(tools)
        try:
            stream = await self._stream(request)
        except Exception as exc:
            raise self._error("", exc) from exc
        calls: dict[int, _PartialCall] = {}
        try:
            async for chunk in stream:
                for delta in _deltas(chunk):
                    content = delta.get("content")
                    if content:
                        yield LLMChunk(text=content)
                    for tc in delta.get("tool_calls") or ():
                        part = _part_of(calls, tc)
                        if tc.get("id"):
                            part.id = tc["id"]
                        function = tc.get("function")
                        if function is not None:
                            part.name += function.get("name") or ""
                            part.arguments += function.get("arguments") or ""
        except Exception as exc:
            raise self._error("stream failed: ", exc) from exc
        finally:
            await stream.close()
        if calls:
            yield LLMChunk(tool_calls=tuple(self._parse(calls[i]) for i in sorted(calls)))

    def json_request(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The chat completions request body of json mode (not streamed)."""
        say_only = bool(messages) and messages[-1].role == "tool"
        request: dict[str, Any] = {
            "model": self.model,
            "messages": _json_messages(messages, tools),
            **self.options,
        }
        if self.json_guide == "prefill":
            prefix = _PREFILL_SAY if say_only else _PREFILL
            request["messages"].append({"role": "assistant", "content": prefix})
        else:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "voxtra_reply",
                    "schema": json_tool_schema(tools, say_only=say_only),
                },
            }
        return request

    async def warm_up(
        self,
        system_prompt: str | None = None,
        tools: Sequence[ToolSpec] = (),
        *,
        history: Sequence[ChatMessage] | None = None,
    ) -> None:
        """Send the fixed head of every request (system prompt and, in json mode, the
        tool list) once, generating one token, so a server with a prompt cache (llama.cpp)
        holds it as a computed prefix before the first caller speaks. ``history`` (a
        conversation's messages, its system message first) warms that conversation
        instead: after a turn, so the prefix the next question extends is computed
        while the answer plays."""
        request = self.warm_up_request(system_prompt, tools, history=history)
        if request is None:
            return
        try:
            await self._sdk().chat.completions.create(**request)
        except Exception as exc:
            raise self._error("warm-up failed: ", exc) from exc

    def warm_up_request(
        self,
        system_prompt: str | None = None,
        tools: Sequence[ToolSpec] = (),
        *,
        history: Sequence[ChatMessage] | None = None,
    ) -> dict[str, Any] | None:
        """The body :meth:`warm_up` sends (None: nothing fixed to warm)."""
        if history is not None:
            messages = list(history)
        else:
            messages = [ChatMessage("system", system_prompt)] if system_prompt else []
        if self.tool_mode == "json":
            request = self.json_request(messages, tools)
        else:
            request = {
                "model": self.model,
                "messages": to_openai_messages(messages),
                **self.options,
            }
            if tools:
                request["tools"] = to_openai_tools(tools)
        request["max_tokens"] = 1
        request.pop("response_format", None)  # a grammar is not part of the prompt
        if request["messages"] and request["messages"][-1]["role"] == "assistant":
            request["messages"].pop()  # nor is a reply's prefill
        return request if request["messages"] else None

    async def _generate_json(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMChunk]:
        request = {**self.json_request(messages, tools), "stream": True}
        try:
            stream = await self._stream(request)
        except Exception as exc:
            raise self._error("", exc) from exc
        parser = _ReplyParser()
        if self.json_guide == "prefill":
            parser.feed(request["messages"][-1]["content"])  # the server continues it
        spoken = False
        preamble_due = self.tool_preamble is not None
        try:
            async for chunk in stream:
                for delta in _deltas(chunk):
                    content = delta.get("content")
                    if content:
                        text = parser.feed(content)
                        if text:
                            spoken = spoken or bool(text.strip())
                            yield LLMChunk(text=text)
                if preamble_due and parser.action is not None:
                    preamble_due = False
                    preamble = self._preamble(parser.action)
                    if preamble:
                        # The trailing space lets a sentence chunker cut it now rather
                        # than wait for the next character, which would not come
                        # until the tool call's JSON is complete.
                        yield LLMChunk(text=preamble.strip() + " ")
                if self.json_guide == "prefill" and parser.complete():
                    break  # unconstrained, a model may go on after the object: stop it
        except Exception as exc:
            raise self._error("stream failed: ", exc) from exc
        finally:
            await stream.close()
        if parser.plain or parser.action == "say":
            if not spoken:  # an empty answer would be silence: the pipeline's fallback
                raise ProviderError(self.name, "the model's answer has no text")
            return  # spoken as it came; a cut-off reply keeps what was said
        try:
            reply = parser.result()
        except ValueError as exc:
            raise ProviderError(self.name, str(exc)) from exc
        arguments = reply.get("arguments", {})
        if not isinstance(arguments, dict):
            raise ProviderError(
                self.name, f"tool call {reply['action']!r} arguments are not an object"
            )
        yield LLMChunk(
            tool_calls=(ToolCall(f"call_json_{next(_ids)}", reply["action"], arguments),)
        )

    def _error(self, doing: str, exc: Exception) -> ProviderError:
        """What the SDK raised while ``doing``, as the error to raise. No byte within
        ``timeout`` (the SDK's ``APITimeoutError``: a service that accepted the request
        and went silent, before the answer or in the middle of it) is a
        ``ProviderTimeout``, as a pipeline deadline is: it was a ``ProviderError``
        reading "APITimeoutError: Request timed out.", which neither named the timeout
        nor let a caller tell a hung service from a refused request."""
        from openai import APITimeoutError

        if isinstance(exc, APITimeoutError | TimeoutError):
            return ProviderTimeout(self.name, f"{doing}no data within {seconds_text(self.timeout)}")
        return ProviderError(self.name, f"{doing}{_describe(exc)}")

    def _preamble(self, action: str) -> str | None:
        if action == "say" or self.tool_preamble is None:
            return None
        if isinstance(self.tool_preamble, str):
            return self.tool_preamble
        return self.tool_preamble.get(action, self.tool_preamble.get("*"))

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


def _part_of(calls: dict[int, _PartialCall], delta: dict[str, Any]) -> _PartialCall:
    """The tool call a streamed ``delta`` adds to. OpenAI numbers them (``index``); some
    compatible servers do not (Gemini's OpenAI endpoint, older Ollama, SambaNova): every
    delta without one was a KeyError, and a turn using a tool failed. There a delta with
    an ``id`` starts a call and one without continues the last."""
    index = delta.get("index")
    if isinstance(index, int):
        return calls.setdefault(index, _PartialCall())
    if delta.get("id") or not calls:
        index = max(calls, default=-1) + 1
        return calls.setdefault(index, _PartialCall())
    return calls[max(calls)]
