"""Per-call conversation state: the history, the tools, and one LLM answer at a time.

An :class:`Agent` belongs to exactly one call. Its ``history`` is a plain list the
application may read and edit; nothing is shared between two agents, even when they
use the same LLM provider object (the field report of an earlier framework found one
history shared by every call, leaking callers' data into each other's prompts).

Tools are plain Python functions, sync or async. Their JSON schema comes from the type
hints (str, int, float, bool, Literal, Enum, list[...], dict, ``X | None``) and their
docstring (first paragraph = description, ``Args:`` / ``:param x:`` lines = argument
descriptions). Parameters with a default are optional; arguments the function does not
take are dropped (a missing required one is an error the model sees).

A tool whose result is already the answer returns :class:`Speak`: the text is said to
the caller as it is, with no second LLM request (pipecat's ``run_llm=False``). A small
local model asked to word a tool's result again was measured to answer the caller's
question wrongly in a third of the turns; and the second request is most of a tool
turn's time (``docs/local-llm.md``).

What a request sends is bounded (``max_history_chars``): the system prompt always, then
the newest whole turns that fit. ``history`` itself keeps every message of the call.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import re
import types
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import anyio

from voxtra.errors import ConfigError, PipelineNotConfigured, ProviderError, VoxtraError
from voxtra.pipeline.events import AgentResponseEvent
from voxtra.providers.base import LLM, ChatMessage, LLMChunk, ToolCall, ToolSpec

__all__ = [
    "MAX_HISTORY_CHARS",
    "Agent",
    "AgentStream",
    "Speak",
    "Tool",
    "ToolCallError",
    "tool_spec",
]

logger = logging.getLogger(__name__)

ToolFunc = Callable[..., Any]

MAX_HISTORY_CHARS = 6000
"""How much conversation a request sends by default, after the system prompt: the
characters of each message's text and tool calls, plus :data:`_MESSAGE_CHARS` each.

Sized for the embedded model (:class:`voxtra.local.LocalLLM`: llama-server, 4096-token
context): with the demo's system prompt and tools (a 709-token head), its requests
overflowed that context after ~54 turns of its own calls, 62 tokens a turn (at 60:
"request (4459 tokens) exceeds the available context size"). Bounded by this, the
same turns measured at most 2,101 tokens a request (history 1,400), which leaves 1,900
tokens, with the 96-token answer, for a head larger than the demo's. That is 12 to 23
turns of a phone call (their turns are short). A cloud model with a large context can
take more: ``Agent(max_history_chars=...)``, or None for no limit."""

_MESSAGE_CHARS = 40
"""What a message counts beyond its text: the chat template's role markers and, with
the local model's JSON tool mode, the JSON around an answer. Measured on the demo's
turns: ~19 tokens a message for ~9 tokens of text; counted so, a history is ~4
characters a token."""

_KEPT_AFTER_TRIM = 0.5
"""When the history sent would pass the limit, the oldest turns are dropped until at
most this fraction of it is left, not just the one turn that would fit: the messages
sent stay the same (each request only adds to the last one) for the turns until the
limit is reached again. llama-server reuses a computed prompt only up to its first
changed token; measured on the demo's turns (``max_history_chars=2000``), a request
between two trims computed only its new turn (43-74 tokens), the one after a trim the
~200 tokens kept (the embedded server's ``--cache-reuse`` now shifts those into place:
docs/pipeline.md). Dropping one turn per request would cost that at every turn."""


class ToolCallError(VoxtraError, ValueError):
    """A tool result or call does not match the conversation (unknown id or tool)."""


class Speak(str):
    """A tool result that is the answer: said to the caller as it is, no LLM request
    after it. ``return Speak("On Sunday we are closed.")``.

    It is a ``str``, so wherever a result is only passed on (the history, a
    speech-to-speech service's function output) it is the text; the voice pipeline and
    :meth:`Agent.respond_with_tools` speak it instead of asking the model again. When a
    step runs several tools, the texts are said in order only if every result is a
    ``Speak``; otherwise the model is asked as usual.
    """

    __slots__ = ()


def spoken_answer(results: Sequence[Any]) -> str | None:
    """The text to say for one step's tool ``results``, or None to ask the model."""
    if not results or not all(isinstance(r, Speak) for r in results):
        return None
    return " ".join(r.strip() for r in results if r.strip()) or None


# --- schema from type hints ----------------------------------------------------------

_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _schema_for(tp: Any, where: str) -> dict[str, Any]:
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        return {**_scalar_type(values, where), "enum": values}
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return {**_scalar_type(list(args), where), "enum": list(args)}
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == len(args):
            return {"anyOf": [_schema_for(a, where) for a in args]}
        inner = (
            _schema_for(rest[0], where)
            if len(rest) == 1
            else {"anyOf": [_schema_for(a, where) for a in rest]}
        )
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if tp is list or origin in (list, Sequence, tuple, set, frozenset):
        item = args[0] if args else Any
        return {"type": "array", "items": _schema_for(item, where)}
    if tp is dict or origin is dict:
        return {"type": "object"}
    raise ConfigError(f"{where}: type {tp!r} cannot be described as JSON schema")


def _scalar_type(values: list[Any], where: str) -> dict[str, Any]:
    kinds = {type(v) for v in values}
    if len(kinds) != 1 or next(iter(kinds)) not in _JSON_TYPES:
        raise ConfigError(f"{where}: enum values must share one str/int/float/bool type")
    return {"type": _JSON_TYPES[next(iter(kinds))]}


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {param: text}) from a Google-style or reST docstring."""
    doc = inspect.cleandoc(doc)
    if not doc:
        return "", {}
    params: dict[str, str] = {}
    desc_lines: list[str] = []
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        m = re.match(r":param\s+(?:[^:]*\s)?(\w+):\s*(.*)", stripped)
        if m:
            current = m.group(1)
            params[current] = m.group(2)
            continue
        if re.match(r"(Args|Arguments|Parameters):\s*$", stripped):
            in_args = True
            continue
        if in_args:
            m = re.match(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", stripped)
            if m and line.startswith((" ", "\t")) and not line.startswith(("        ",)):
                current = m.group(1)
                params[current] = m.group(2)
                continue
            if stripped and current and line.startswith((" ", "\t")):
                params[current] += " " + stripped
                continue
            if not stripped:
                continue
            in_args = False
            current = None
        if stripped.startswith(":") or re.match(r"(Returns?|Raises|Yields):\s*$", stripped):
            current = None
            continue
        if not params and not in_args:
            desc_lines.append(line)
    paragraphs = "\n".join(desc_lines).strip().split("\n\n")
    description = " ".join(paragraphs[0].split()) if paragraphs else ""
    return description, {k: " ".join(v.split()) for k, v in params.items()}


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered function with the spec the LLM sees."""

    func: ToolFunc
    spec: ToolSpec
    enums: dict[str, type[enum.Enum]]

    @property
    def name(self) -> str:
        return self.spec.name


def tool_spec(func: ToolFunc, *, name: str | None = None, description: str | None = None) -> Tool:
    """Describe ``func`` for the LLM from its signature, type hints and docstring."""
    tool_name: str = name or str(getattr(func, "__name__", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
        raise ConfigError(f"tool name {tool_name!r} must be 1-64 letters, digits, _ or -")
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # unresolved forward references and the like
        raise ConfigError(f"tool {tool_name}: cannot resolve type hints: {exc}") from exc
    doc_desc, doc_params = _parse_docstring(inspect.getdoc(func) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    enums: dict[str, type[enum.Enum]] = {}
    for pname, param in inspect.signature(func).parameters.items():
        where = f"tool {tool_name}, parameter {pname}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"{where}: *args / **kwargs cannot be described to an LLM")
        if pname not in hints:
            raise ConfigError(f"{where}: needs a type hint")
        tp = hints[pname]
        schema = _schema_for(tp, where)
        if pname in doc_params:
            schema["description"] = doc_params[pname]
        if param.default is param.empty:
            required.append(pname)
        elif isinstance(param.default, str | int | float | bool):
            schema["default"] = param.default
        elif isinstance(param.default, enum.Enum):
            schema["default"] = param.default.value
        properties[pname] = schema
        for candidate in (tp, *get_args(tp)):
            if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
                enums[pname] = candidate
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    spec = ToolSpec(tool_name, description or doc_desc or tool_name, parameters)
    return Tool(func, spec, enums)


# --- the agent ------------------------------------------------------------------------


class AgentStream:
    """One streamed LLM answer, recorded into the history as it arrives.

    Iterate it for text deltas. The assistant message is appended to the history when
    the stream starts and filled as tokens arrive, so a barge-in can trim exactly that
    message; if the answer ends up empty it is removed again.
    """

    def __init__(self, agent: Agent, messages: list[ChatMessage]) -> None:
        self._agent = agent
        self._messages = messages
        self.message = ChatMessage(role="assistant")
        self.tool_calls: tuple[ToolCall, ...] = ()
        self.done = False

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._run()

    async def _run(self) -> AsyncGenerator[str, None]:
        agent = self._agent
        llm = agent.llm
        if llm is None:
            raise PipelineNotConfigured("Agent.stream()", ["llm"], "Agent(llm=...)")
        agent.history.append(self.message)
        try:
            source = llm.generate(self._messages, agent.tool_specs)
            async with aclosing(_aiter(source)) as chunks:
                async for chunk in chunks:
                    if chunk.tool_calls:
                        self.tool_calls += tuple(chunk.tool_calls)
                        self.message.tool_calls.extend(chunk.tool_calls)
                    if chunk.text:
                        self.message.content += chunk.text
                        yield chunk.text
            self.done = True
        finally:
            if not self.message.content and not self.message.tool_calls:
                agent._remove(self.message)


async def _aiter(source: AsyncIterator[LLMChunk]) -> AsyncGenerator[LLMChunk, None]:
    """Wrap a provider's iterator so it can be closed (and generation stopped)."""
    try:
        async for item in source:
            yield item
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


def _message_chars(message: ChatMessage) -> int:
    """What ``message`` counts against :attr:`Agent.max_history_chars`.

    A tool call's arguments count as their ``repr`` (the JSON sent is as long, give or
    take a character per value): ``json.dumps`` took 4.1 us a call against 0.8, and
    this runs for every message sent, at every request."""
    chars = len(message.content) + _MESSAGE_CHARS
    for call in message.tool_calls:
        chars += len(call.name) + len(repr(call.arguments))
    return chars


def _trim_point(messages: Sequence[ChatMessage], sizes: Sequence[int], budget: int) -> int:
    """The index in ``messages`` to send from, so that at most ``budget`` is sent.

    Turns start at a user message; without one (an application that only calls ``say()``)
    any message but a tool result may start. When even the newest turn is larger than
    the budget, it is sent whole: a cut inside it could leave a tool result without
    its call, and the question unanswerable."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if users:
        # Only the user messages: a slice starting at its one user message is the turn
        # under way (its tool steps), sent whole; the fallback below cut the question off
        # a turn whose tool results passed the budget.
        starts = [i for i in users if i > 0]
    else:
        starts = [i for i, m in enumerate(messages) if m.role != "tool" and i > 0]
    left = sum(sizes)
    dropped = 0
    for i in starts:
        left -= sum(sizes[dropped:i])
        dropped = i
        if left <= budget:
            return i
    return starts[-1] if starts else 0


class Agent:
    """One call's conversation with an LLM: history, tools, answers.

    ``respond(text)`` adds the user's message (unless ``text`` is empty, which continues
    after tool results) and returns the whole answer; it does not run tools, so the
    caller decides: run them and ``add_tool_result``, then ``respond("")``.
    ``respond_with_tools`` does that loop automatically, as the pipeline does.

    ``max_history_chars`` bounds what each request sends (:meth:`request_messages`):
    the system prompt, then the newest whole turns within that many characters.
    A call's history otherwise grows with every turn, and the embedded model's
    4096-token context overflowed after ~54 turns (:data:`MAX_HISTORY_CHARS`).
    """

    def __init__(
        self,
        llm: LLM | None,
        *,
        system_prompt: str | None = None,
        tools: Iterable[ToolFunc | Tool] = (),
        max_tool_steps: int = 5,
        history: Iterable[ChatMessage] = (),
        tool_timeout: float | None = 20.0,
        max_history_chars: int | None = MAX_HISTORY_CHARS,
    ) -> None:
        if tool_timeout is not None and tool_timeout <= 0:
            raise ConfigError(f"tool_timeout must be > 0 seconds or None, got {tool_timeout!r}")
        if max_history_chars is not None and max_history_chars <= 0:
            raise ConfigError(f"max_history_chars must be > 0 or None, got {max_history_chars!r}")
        self.llm = llm
        self.max_history_chars = max_history_chars
        """The most conversation a request sends after the system prompt (see
        :data:`MAX_HISTORY_CHARS`); None sends the whole history."""
        self._sent_from: ChatMessage | None = None
        """The oldest message after the system prompt that requests send, once older
        turns were dropped (see :meth:`request_messages`)."""
        self.max_tool_steps = max_tool_steps
        self.tool_timeout = tool_timeout
        """Seconds an async tool may take; then its result is an error the LLM answers
        (None: no limit). The caller hears nothing while a tool runs and cannot talk
        over it: a tool waiting on a server that never answers kept the call silent
        until the caller hung up."""
        self.history: list[ChatMessage] = []
        if system_prompt:
            self.history.append(ChatMessage(role="system", content=system_prompt))
        self.history.extend(
            ChatMessage(m.role, m.content, list(m.tool_calls), m.tool_call_id) for m in history
        )
        self.tools: dict[str, Tool] = {}
        for t in tools:
            self.add_tool(t)

    # -- tools

    def add_tool(
        self, func: ToolFunc | Tool, *, name: str | None = None, description: str | None = None
    ) -> Tool:
        """Register a function (or a prepared :class:`Tool`) the LLM may call."""
        tool = (
            func if isinstance(func, Tool) else tool_spec(func, name=name, description=description)
        )
        if tool.name in self.tools:
            raise ConfigError(f"tool {tool.name!r} is already registered")
        self.tools[tool.name] = tool
        return tool

    def tool(self, func: ToolFunc) -> ToolFunc:
        """Decorator form of :meth:`add_tool`."""
        self.add_tool(func)
        return func

    @property
    def tool_specs(self) -> list[ToolSpec]:
        return [t.spec for t in self.tools.values()]

    def pending_tool_calls(self) -> list[ToolCall]:
        """Tool calls of the last assistant message that have no result yet."""
        answered: set[str] = set()
        for msg in reversed(self.history):
            if msg.role == "tool" and msg.tool_call_id:
                answered.add(msg.tool_call_id)
            elif msg.role == "assistant":
                return [c for c in msg.tool_calls if c.id not in answered]
            else:
                break
        return []

    def add_tool_result(self, tool_id: str, result: Any) -> None:
        """Feed a tool's result back (str as is, anything else as JSON)."""
        if tool_id not in {c.id for c in self.pending_tool_calls()}:
            raise ToolCallError(f"no pending tool call with id {tool_id!r}")
        content = str(result) if isinstance(result, str) else json.dumps(result, default=str)
        self.history.append(ChatMessage(role="tool", content=content, tool_call_id=tool_id))

    async def call_tool(self, call: ToolCall) -> Any:
        """Run a registered tool with the LLM's arguments; errors become a result text.

        The LLM sees a failed call as an error message it can react to, instead of the
        call dying. Sync tools run inline: keep them quick or make them async.
        """
        tool = self.tools.get(call.name)
        if tool is None:
            return f"error: unknown tool {call.name!r}"
        props = tool.spec.parameters.get("properties", {})
        unknown = sorted(set(call.arguments) - set(props))
        missing = [p for p in tool.spec.parameters.get("required", []) if p not in call.arguments]
        if missing:
            return f"error: bad arguments (unknown: {unknown}, missing: {missing})"
        if unknown:
            # Dropped, as pydantic's default (extra="ignore") does for LiveKit's tools: a
            # small model lends a field of one tool to another (measured: Qwen2.5-Coder-
            # 1.5B called get_weather(city="Madrid", day="tomorrow") next to a tool with a
            # ``day``), and refusing a call that has all it needs made the caller hear
            # "Sorry, I did not understand that".
            logger.info("tool %s: ignoring unknown arguments %s", call.name, unknown)
        kwargs = {k: v for k, v in call.arguments.items() if k in props}
        try:
            for pname, etype in tool.enums.items():
                if kwargs.get(pname) is not None:
                    kwargs[pname] = etype(kwargs[pname])
            result = tool.func(**kwargs)
            if inspect.isawaitable(result):
                with anyio.move_on_after(self.tool_timeout) as waited:
                    result = await result
                if waited.cancelled_caught:
                    logger.warning("tool %s: no result within %g s", call.name, self.tool_timeout)
                    return f"error: no result within {self.tool_timeout:g} s"
        except Exception as exc:
            logger.warning("tool %s failed: %r", call.name, exc)
            return f"error: {type(exc).__name__}: {exc}"
        return result

    async def run_tools(self, calls: Iterable[ToolCall] | None = None) -> list[Any]:
        """Run the pending tool calls (or ``calls``), add their results to the history,
        and return the results in order."""
        results: list[Any] = []
        for call in list(calls if calls is not None else self.pending_tool_calls()):
            result = await self.call_tool(call)
            self.add_tool_result(call.id, result)
            results.append(result)
        return results

    def cancel_pending_tool_calls(self, reason: str = "cancelled") -> None:
        """Answer unanswered tool calls, so the history stays valid for the next request."""
        for call in self.pending_tool_calls():
            self.add_tool_result(call.id, f"error: {reason}")

    # -- answers

    def stream(self, text: str) -> AgentStream:
        """Start an answer to ``text`` ("" = continue after tool results), streamed.

        Tool calls of the last answer still without a result (not run: a turn cancelled
        while a tool ran, or ``respond()`` whose calls the app did not run) are answered
        "error: not run" first: OpenAI refuses a history where an assistant message's
        tool calls are not followed by their results, and every later turn failed."""
        if text:
            self.cancel_pending_tool_calls("not run")
            self.history.append(ChatMessage(role="user", content=text))
        return AgentStream(self, self.request_messages())

    def request_messages(self) -> list[ChatMessage]:
        """The messages the next LLM request sends: the history, bounded.

        The leading system messages are always sent; after them, the newest whole turns
        within :attr:`max_history_chars`. A turn starts at a user message, so an
        assistant message's tool calls are never sent without their results (OpenAI
        refuses a ``tool`` message whose call it was not shown). When the history grows
        past the limit, the oldest turns are dropped until half of it is left, and
        later requests start from the same message until the limit is reached again:
        a model server's prompt cache (llama-server's) then reuses each request's
        prefix (see :data:`_KEPT_AFTER_TRIM`).

        Only the request is cut, never :attr:`history`: it stays the call's whole
        conversation as heard, for the application (the agent's side of a transcript),
        :class:`~voxtra.calls.secure.SecureInput`'s redaction, and a speech-to-speech
        engine that restores a session from it. It costs a few hundred bytes a turn.
        """
        history = self.history
        limit = self.max_history_chars
        if limit is None:
            return list(history)
        head = 0
        while head < len(history) and history[head].role == "system":
            head += 1
        start = head
        if self._sent_from is not None:
            # Found by identity, from the end (it is among the newest messages): the
            # application may edit the history, and a message it removed starts the
            # count again from the top.
            for i in range(len(history) - 1, head - 1, -1):
                if history[i] is self._sent_from:
                    start = i
                    break
        sizes = [_message_chars(m) for m in history[start:]]
        if sum(sizes) > limit:
            start += _trim_point(history[start:], sizes, int(limit * _KEPT_AFTER_TRIM))
            self._sent_from = history[start] if start < len(history) else None
            logger.debug(
                "agent: sending the history from message %d of %d (%d characters)",
                start,
                len(history),
                sum(_message_chars(m) for m in history[start:]),
            )
        return [*history[:head], *history[start:]]

    async def respond(self, text: str) -> AgentResponseEvent:
        """The whole answer to ``text``; tool calls are returned, not run."""
        stream = self.stream(text)
        try:
            async for _ in stream:
                pass
        except ProviderError:
            raise
        except Exception as exc:
            name = self.llm.name if self.llm is not None else "llm"
            raise ProviderError(name, f"{type(exc).__name__}: {exc}") from exc
        return AgentResponseEvent(stream.message.content, stream.tool_calls)

    async def respond_with_tools(self, text: str) -> AgentResponseEvent:
        """Answer, running requested tools and feeding results back, up to max_tool_steps."""
        event = await self.respond(text)
        steps = 0
        while event.tool_calls:
            if steps >= self.max_tool_steps:
                self.cancel_pending_tool_calls("tool step limit reached")
                logger.warning("agent stopped after %d tool steps", steps)
                break
            spoken = spoken_answer(await self.run_tools())
            steps += 1
            if spoken is not None:
                self.history.append(ChatMessage(role="assistant", content=spoken))
                return AgentResponseEvent(spoken, ())
            event = await self.respond("")
        return event

    # -- history editing

    def trim_message(self, message: ChatMessage, heard_text: str) -> None:
        """Cut an assistant message to what the caller heard (drop it if nothing was)."""
        message.content = heard_text
        if not heard_text and not message.tool_calls:
            self._remove(message)

    def trim_last_assistant(self, heard_text: str) -> None:
        """Cut the last assistant message to ``heard_text`` (after a barge-in)."""
        for msg in reversed(self.history):
            if msg.role == "assistant":
                self.trim_message(msg, heard_text)
                return

    def _remove(self, message: ChatMessage) -> None:
        for i, msg in enumerate(self.history):
            if msg is message:
                del self.history[i]
                return
