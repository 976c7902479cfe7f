"""RulesAgent: the embedded, offline "LLM" — intents, slots, canned answers and tools.

No small instruction-tuned model runs here from a plain ``pip install`` (notes/speech.md),
so the zero-config agent is rule based: it is predictable, instant and testable, and it
speaks the same ``LLM`` protocol (streamed text, tool calls) as a real model, so the
pipeline cannot tell the difference.

An ``Intent`` matches the caller's last message by regular expressions (named groups
become slots) or by keywords; its answer is a ``str.format`` template over the slots. An
intent with ``tool`` asks the pipeline to call that tool with the slots as arguments; once
the tool result is in the history, ``tool_answer`` is rendered with the slots plus
``result`` (and the result's keys, when it is a JSON object).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxtra.errors import ConfigError
from voxtra.providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec

__all__ = ["DEFAULT_FALLBACK", "Intent", "RulesAgent", "default_intents"]

DEFAULT_FALLBACK = (
    "Sorry, I did not understand that. Could you say it again? You can ask for our "
    "opening hours, the weather in a city, or a story."
)
"""What the agent says when nothing matches: it says so and asks again (never silence:
a caller who hears nothing after a question assumes the line is dead)."""

_WEATHER_WORDS = (
    r"weather|forecast|temperature|degrees|rain\w*|sunny|sunshine|snow\w*|windy|"
    r"storm\w*|cloudy|umbrella|cold|warm|hot"
)

_ids = itertools.count(1)


class _Slots(dict[str, Any]):
    """Template values: a missing slot renders as an empty string, not a KeyError."""

    def __missing__(self, key: str) -> str:
        return ""


def _render(template: str, values: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Slots(values))
    # TypeError and KeyError too: "{result[temp]}" over a tool's plain-text result, or a
    # key a JSON result lacks, raised them bare (not a VoxtraError) from generate().
    except (ValueError, AttributeError, IndexError, TypeError, KeyError) as exc:
        raise ConfigError(f"bad answer template {template!r}: {exc}") from exc


@dataclass(frozen=True)
class Intent:
    """What the caller may want, how to spot it, and what to answer.

    ``patterns`` are case-insensitive regexes searched in the caller's text (named groups
    are slots); ``keywords`` match whole words when no pattern does. Higher ``priority``
    wins when several intents match (a greeting followed by a question should answer the
    question). ``examples`` are phrases callers say: ``RulesAgent.vocabulary()`` turns
    them into a keyword list for grammar-mode speech recognition.
    """

    name: str
    answer: str = ""
    patterns: Sequence[str] = ()
    keywords: Sequence[str] = ()
    slots: Mapping[str, str] = field(default_factory=dict)
    """Default slot values, used when the pattern does not capture them."""
    tool: str | None = None
    tool_answer: str = "{result}"
    priority: int = 0
    examples: Sequence[str] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _keywords: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.patterns and not self.keywords:
            raise ConfigError(f"intent {self.name!r} needs patterns or keywords")
        if not self.answer and self.tool is None:
            raise ConfigError(f"intent {self.name!r} needs an answer or a tool")
        try:
            compiled = tuple(re.compile(p, re.IGNORECASE) for p in self.patterns)
        except re.error as exc:
            raise ConfigError(f"intent {self.name!r}: bad pattern: {exc}") from exc
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_keywords", frozenset(k.lower() for k in self.keywords))

    def match(self, text: str) -> dict[str, str] | None:
        """Slots if ``text`` matches this intent, else None."""
        for rx in self._compiled:
            m = rx.search(text)
            if m:
                found = {k: v.strip() for k, v in m.groupdict().items() if v}
                return {**self.slots, **found}
        lowered = text.lower()
        words = set(re.findall(r"[a-z0-9']+", lowered))
        for keyword in self._keywords:
            if (keyword in lowered) if " " in keyword else (keyword in words):
                return dict(self.slots)
        return None


def default_intents() -> list[Intent]:
    """The demo assistant's intents (the weather one calls a ``get_weather(city)`` tool,
    the hand-off one ``transfer_to_person(reason)``)."""
    return [
        Intent(
            "greeting",
            "Hello! I am the Voxtra demo assistant. How can I help you?",
            patterns=[r"\b(hello|hi|hey|good (morning|afternoon|evening))\b"],
            priority=-1,
            examples=["hello", "hi", "good morning", "good afternoon", "good evening"],
        ),
        Intent(
            "opening_hours",
            "We are open Monday to Friday, from nine in the morning to five in the evening.",
            # "When are you open?", "What time do you close?", "Are you open on Monday?"
            patterns=[r"\b(opening|open|opens|hours|close|closes|closing|what time)\b"],
            examples=["what are your opening hours", "when are you open"],
        ),
        Intent(
            "capabilities",
            "I can tell you our opening hours, check the weather in a city, "
            "or tell you a long story.",
            patterns=[r"what can you do", r"\b(help|options)\b"],
            examples=["what can you do", "help"],
        ),
        Intent(
            "story",
            "Once upon a time, a small robot lived in a telephone exchange. "
            "Every night it listened to the quiet hum of the lines and wondered who was "
            "calling whom. One evening a call came in that nobody answered, so the robot "
            "picked it up and said hello. On the other end was a lighthouse keeper, far "
            "away on a rocky island, who wanted to know whether the storm would pass. "
            "The robot did not know, but it promised to find out. It asked the weather "
            "station, the harbour master and the old ferry captain, and each of them told "
            "it a different story. In the end the robot called the lighthouse keeper back "
            "and told him all three stories, and by the time it had finished, the storm "
            "had passed and the sun was rising over the sea.",
            patterns=[r"\b(story|stories)\b"],
            priority=1,
            examples=["tell me a long story", "tell me a story"],
        ),
        Intent(
            "weather",
            "I cannot check the weather right now.",
            # Any weather word anywhere ("Is it raining in Berlin today?", "do I need
            # an umbrella in Paris"), the city after "in", before or after that word.
            # One word after "in": speech recognition often tacks a short stray word
            # onto the end ("berlin good"), which must not become part of the city.
            patterns=[
                rf"(?=.*\b(?:{_WEATHER_WORDS})\b)"
                r"(?:.*?\bin (?!the\b|a\b|an\b|here\b|there\b)(?P<city>[a-z]+))?"
            ],
            slots={"city": "London"},
            tool="get_weather",
            tool_answer="The weather in {city} is {result}.",
            priority=1,
            examples=["what is the weather in london", "weather in paris", "weather in berlin"],
        ),
        Intent(
            "handoff",
            "I cannot put you through right now, sorry.",
            # "Can I talk to a person?", "get me a human", "the operator please"
            patterns=[
                r"\b(person|human|operator|receptionist|representative|real people)\b",
                r"\b(speak|talk) (to|with) (someone|somebody|anyone)\b",
            ],
            slots={"reason": "asked for a person"},
            tool="transfer_to_person",
            tool_answer="I am putting you through to a person now.",
            priority=2,
            examples=["can i talk to a person", "operator"],
        ),
        Intent(
            "goodbye",
            "Goodbye, and thank you for calling.",
            patterns=[r"\b(goodbye|bye|that is all|that's all)\b"],
            examples=["goodbye", "thank you goodbye", "that is all"],
        ),
    ]


class RulesAgent:
    """Offline rule/intent agent speaking the ``LLM`` protocol.

    Answers stream in word-sized chunks (``word_delay`` seconds apart, 0 by default:
    set it to mimic a model's token rate in tests). Tools are only called when the
    pipeline offers them in ``tools``; otherwise the intent's ``answer`` is spoken.
    """

    name = "rules"

    def __init__(
        self,
        intents: Sequence[Intent] | None = None,
        fallback: str = DEFAULT_FALLBACK,
        *,
        word_delay: float = 0.0,
    ) -> None:
        self.intents = list(default_intents() if intents is None else intents)
        names = [i.name for i in self.intents]
        if len(set(names)) != len(names):
            raise ConfigError(f"RulesAgent intent names must be unique: {names}")
        self.fallback = fallback
        self.word_delay = word_delay

    def vocabulary(self) -> list[str]:
        """Every example phrase of every intent: pass it as ``PocketSphinxSTT(keywords=...)``."""
        return [e for i in self.intents for e in i.examples]

    def classify(self, text: str) -> tuple[Intent, dict[str, str]] | None:
        """The best intent for ``text`` and its slots, or None (fallback)."""
        best: tuple[Intent, dict[str, str]] | None = None
        for intent in self.intents:
            slots = intent.match(text)
            if slots is not None and (best is None or intent.priority > best[0].priority):
                best = (intent, slots)
        return best

    def reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> str | ToolCall:
        """The whole answer (or the tool call) for ``messages``, without streaming."""
        if messages and messages[-1].role == "tool":
            return self._after_tool(messages)
        user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        found = self.classify(user)
        if found is None:
            return self.fallback
        intent, slots = found
        if intent.tool is not None and intent.tool in {t.name for t in tools}:
            return ToolCall(f"call_rules_{next(_ids)}", intent.tool, dict(slots))
        return _render(intent.answer, slots)

    def _after_tool(self, messages: Sequence[ChatMessage]) -> str:
        results: dict[str, str] = {}
        for m in reversed(messages):
            if m.role == "tool" and m.tool_call_id is not None:
                results[m.tool_call_id] = m.content
            elif m.role == "assistant" and m.tool_calls:
                parts = []
                for call in m.tool_calls:
                    intent = next((i for i in self.intents if i.tool == call.name), None)
                    raw = results.get(call.id, "")
                    values: dict[str, Any] = {**call.arguments, "result": raw}
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        parsed = None
                    if isinstance(parsed, dict):
                        values.update(parsed)
                    template = intent.tool_answer if intent is not None else "{result}"
                    parts.append(_render(template, values))
                return " ".join(p for p in parts if p) or self.fallback
            else:
                break
        return self.fallback

    async def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply word by word, or yield one chunk carrying the tool call."""
        answer = self.reply(messages, tools)
        if isinstance(answer, ToolCall):
            yield LLMChunk(tool_calls=(answer,))
            return
        for word in re.findall(r"\S+\s*", answer):
            yield LLMChunk(text=word)
            await asyncio.sleep(self.word_delay)
