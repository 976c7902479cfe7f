"""RulesAgent: intents, slots, priorities, tool calls and streaming, as the pipeline uses it."""

from __future__ import annotations

import json

import pytest

from voxtra.errors import ConfigError
from voxtra.providers.base import LLM, ChatMessage, LLMChunk, ToolCall, ToolSpec
from voxtra.providers.rules import DEFAULT_FALLBACK, Intent, RulesAgent

WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


async def collect(agent: RulesAgent, messages: list[ChatMessage], tools=()) -> list[LLMChunk]:
    return [c async for c in agent.generate(messages, tools)]


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage("system", "be nice"), ChatMessage("user", text)]


def test_rules_agent_implements_llm_protocol() -> None:
    assert isinstance(RulesAgent(), LLM)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello there", "Hello! I am the Voxtra demo assistant"),
        ("What are your opening hours?", "We are open Monday to Friday"),
        ("what can you do", "I can tell you our opening hours"),
        ("tell me a long story", "Once upon a time"),
        ("ok goodbye", "Goodbye, and thank you for calling."),
        ("purple monkey dishwasher", DEFAULT_FALLBACK),
    ],
)
async def test_default_intents_answer(text: str, expected: str) -> None:
    chunks = await collect(RulesAgent(), user(text))
    answer = "".join(c.text for c in chunks)
    assert answer.startswith(expected)
    assert all(not c.tool_calls for c in chunks)


async def test_answer_streams_word_by_word_and_reassembles_exactly() -> None:
    chunks = await collect(RulesAgent(), user("tell me a story"))
    story = next(i for i in RulesAgent().intents if i.name == "story").answer
    assert "".join(c.text for c in chunks) == story
    assert len(chunks) == len(story.split())
    assert all(len(c.text.split()) == 1 for c in chunks)
    assert story.count(". ") >= 5  # long, multi-sentence: the barge-in test needs time


async def test_question_beats_greeting_by_priority() -> None:
    answer = "".join(c.text for c in await collect(RulesAgent(), user("hi, when are you open")))
    assert answer.startswith("We are open")


async def test_only_the_last_user_message_counts() -> None:
    history = [*user("hello"), ChatMessage("assistant", "Hello!"), ChatMessage("user", "bye")]
    answer = "".join(c.text for c in await collect(RulesAgent(), history))
    assert answer.startswith("Goodbye")


async def test_weather_tool_flow_with_slot_and_json_result() -> None:
    agent = RulesAgent()
    chunks = await collect(agent, user("what is the weather in Paris?"), [WEATHER])
    assert len(chunks) == 1 and chunks[0].text == ""
    (call,) = chunks[0].tool_calls
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"}
    history = [
        *user("what is the weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", json.dumps("sunny and 21 degrees"), tool_call_id=call.id),
    ]
    answer = "".join(c.text for c in await collect(agent, history, [WEATHER]))
    assert answer == 'The weather in Paris is "sunny and 21 degrees".'


async def test_tool_result_object_keys_fill_the_template() -> None:
    agent = RulesAgent(
        [
            Intent(
                "balance",
                patterns=[r"balance of account (?P<account>\d+)"],
                tool="get_balance",
                tool_answer="Account {account} holds {amount} {currency}.",
            )
        ]
    )
    tools = [ToolSpec("get_balance", "balance", {"type": "object"})]
    (chunk,) = await collect(agent, user("the balance of account 42 please"), tools)
    call = chunk.tool_calls[0]
    assert call.arguments == {"account": "42"}
    history = [
        *user("the balance of account 42 please"),
        ChatMessage("assistant", tool_calls=[call]),
        ChatMessage("tool", '{"amount": 12.5, "currency": "EUR"}', tool_call_id=call.id),
    ]
    answer = "".join(c.text for c in await collect(agent, history, tools))
    assert answer == "Account 42 holds 12.5 EUR."


async def test_default_slot_when_pattern_does_not_capture() -> None:
    (chunk,) = await collect(RulesAgent(), user("how is the weather"), [WEATHER])
    assert chunk.tool_calls[0].arguments == {"city": "London"}


async def test_tool_intent_answers_plainly_when_tool_not_offered() -> None:
    answer = "".join(c.text for c in await collect(RulesAgent(), user("weather in Rome")))
    assert answer == "I cannot check the weather right now."


async def test_keywords_match_whole_words_and_phrases() -> None:
    agent = RulesAgent(
        [Intent("billing", "Billing it is.", keywords=["invoice", "credit card"])],
        fallback="Pardon?",
    )
    assert agent.reply(user("about my invoice")) == "Billing it is."
    assert agent.reply(user("my Credit Card was charged")) == "Billing it is."
    assert agent.reply(user("invoices")) == "Pardon?"  # whole words only
    assert agent.reply(user("")) == "Pardon?"


def test_vocabulary_lists_examples_for_grammar_stt() -> None:
    vocab = RulesAgent().vocabulary()
    assert "what are your opening hours" in vocab and "goodbye" in vocab


def test_templates_with_missing_slots_render_empty() -> None:
    agent = RulesAgent([Intent("x", "Hi {name}!", patterns=["hi"])])
    assert agent.reply(user("hi")) == "Hi !"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "a", "answer": "x"},  # no patterns/keywords
        {"name": "a", "patterns": ["x"]},  # no answer, no tool
        {"name": "a", "answer": "x", "patterns": ["(unclosed"]},
    ],
)
def test_bad_intents_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Intent(**kwargs)  # type: ignore[arg-type]


def test_duplicate_intent_names_rejected() -> None:
    with pytest.raises(ConfigError):
        RulesAgent([Intent("a", "x", patterns=["x"]), Intent("a", "y", patterns=["y"])])


async def test_tool_call_ids_are_unique() -> None:
    agent = RulesAgent()
    a = agent.reply(user("weather"), [WEATHER])
    b = agent.reply(user("weather"), [WEATHER])
    assert isinstance(a, ToolCall) and isinstance(b, ToolCall) and a.id != b.id


async def test_not_understood_says_so_and_asks_again() -> None:
    """Never silence: text the agent knows nothing of, or an empty transcript, gets an
    answer that says it was not understood and asks the caller to say it again."""
    for text in ("purple monkey dishwasher", "", "   "):
        answer = "".join(c.text for c in await collect(RulesAgent(), user(text)))
        assert answer == DEFAULT_FALLBACK
    assert "did not understand" in DEFAULT_FALLBACK.lower()
    assert "again?" in DEFAULT_FALLBACK


@pytest.mark.parametrize(
    "text",
    [
        "When are you open?",
        "Where are you open?",  # what Whisper tiny.en made of espeak's "When are you open?"
        "What time do you close today?",
        "Are you open on Saturday?",
    ],
)
async def test_opening_hours_paraphrases(text: str) -> None:
    answer = "".join(c.text for c in await collect(RulesAgent(), user(text)))
    assert answer.startswith("We are open Monday to Friday")


@pytest.mark.parametrize(
    ("text", "city"),
    [
        ("Is it raining in Berlin today?", "Berlin"),
        ("It's raining in Berlin today.", "Berlin"),  # Whisper's version of the question
        ("Do I need an umbrella in Paris?", "Paris"),
        ("how cold is it in Oslo", "Oslo"),
        ("in London, is it sunny?", "London"),
        ("what is the weather in berlin good", "berlin"),
        ("is it going to snow", "London"),  # no city: the default slot
        ("what's the weather like in the city", "London"),  # "the" is no city
    ],
)
async def test_weather_paraphrases_call_the_tool_with_the_city(text: str, city: str) -> None:
    chunks = await collect(RulesAgent(), user(text), [WEATHER])
    calls = [call for c in chunks for call in c.tool_calls]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": city})]


@pytest.mark.parametrize(
    ("result", "template"),
    [
        ("sunny", "{result[temp]} degrees."),  # TypeError: a str indexed by a key
        (json.dumps({"wind": {"gust": 40}}), "Wind {wind[speed]}."),  # KeyError
    ],
)
def test_a_template_indexing_what_the_tool_did_not_return_is_a_config_error(
    result: str, template: str
) -> None:
    """Indexing a plain-text result, or a key a JSON result lacks, raised a bare
    TypeError/KeyError (not a VoxtraError) out of the agent."""
    agent = RulesAgent(
        [
            Intent(
                "w",
                patterns=["weather"],
                tool="get_weather",
                tool_answer=template,
            )
        ]
    )
    call = ToolCall("c1", "get_weather", {})
    messages = [
        ChatMessage("user", "weather"),
        ChatMessage("assistant", tool_calls=[call]),
        ChatMessage("tool", result, tool_call_id="c1"),
    ]
    with pytest.raises(ConfigError, match="bad answer template"):
        agent.reply(messages)
