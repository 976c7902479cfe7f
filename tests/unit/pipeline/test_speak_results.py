"""A tool's ``Speak`` result is the answer: said as it is, no LLM request after it."""

from __future__ import annotations

import anyio

from voxtra.pipeline import Agent, Speak
from voxtra.pipeline.events import AgentResponseEvent, BargeInEvent
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.providers.base import ToolCall

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS, words


def hours(day: str) -> Speak:
    """Opening hours.

    Args:
        day: the day.
    """
    return Speak(f"On {day} we are closed. Our shop opens again on Monday at nine.")


def weather(city: str) -> str:
    """Weather.

    Args:
        city: the city.
    """
    return "sunny"


async def _run_turn(
    replies: list[Reply], tools: list[object], *, interrupt_after_ms: int | None = None
) -> tuple[VoicePipeline, ScriptedLLM, ScriptedTTS, list[object]]:
    media = MemoryMediaIO()
    clock = media.clock
    llm = ScriptedLLM(replies, clock)
    tts = ScriptedTTS(clock)
    p = VoicePipeline(
        ScriptedSTT(["are you open on sunday"], clock), llm, tts, EnergyVAD(), tools=tools
    )
    events: list[object] = []
    p.on_event(events.append)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        if interrupt_after_ms is not None:
            await media.wait_until(lambda: len(tts.requests) >= 2, 20)
            await media.clock.sleep(interrupt_after_ms / 1000)
            media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: len(p.metrics) >= 1 and media.queued_ms == 0, 30)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=clock)
    return p, llm, tts, events


async def test_a_speak_result_is_said_without_asking_the_model_again() -> None:
    call = ToolCall("c1", "hours", {"day": "Sunday"})
    p, llm, tts, events = await _run_turn(
        [Reply(["One moment."], tool_calls=(call,)), Reply(["The model was asked again."])],
        [hours],
    )
    assert len(llm.calls) == 1  # before: 2, the second wording the result
    said = [t for _, t in tts.requests]
    assert said == [
        "One moment.",
        "On Sunday we are closed.",
        "Our shop opens again on Monday at nine.",
    ]
    answers = [e.text for e in events if isinstance(e, AgentResponseEvent)]
    assert answers[-1] == "On Sunday we are closed. Our shop opens again on Monday at nine."
    # The history reads as if the model had said it: the next request sees the answer.
    roles = [(m.role, m.content) for m in p.agent.history][-2:]
    assert roles == [
        ("tool", "On Sunday we are closed. Our shop opens again on Monday at nine."),
        ("assistant", "On Sunday we are closed. Our shop opens again on Monday at nine."),
    ]
    assert type(p.agent.history[-2].content) is str  # stored as text, not a Speak


async def test_a_plain_result_beside_a_speak_one_goes_back_to_the_model() -> None:
    calls = (
        ToolCall("c1", "hours", {"day": "Sunday"}),
        ToolCall("c2", "weather", {"city": "Oslo"}),
    )
    _p, llm, tts, _events = await _run_turn(
        [Reply([], tool_calls=calls), Reply(words("Closed, and sunny."))], [hours, weather]
    )
    assert len(llm.calls) == 2
    assert [m.role for m in llm.calls[1].messages][-2:] == ["tool", "tool"]
    assert [t for _, t in tts.requests] == ["Closed, and sunny."]


async def test_an_interrupted_speak_answer_keeps_only_what_was_heard() -> None:
    call = ToolCall("c1", "hours", {"day": "Sunday"})
    p, llm, _tts, events = await _run_turn(
        [Reply([], tool_calls=(call,))], [hours], interrupt_after_ms=300
    )
    assert [e for e in events if isinstance(e, BargeInEvent)]
    spoken = [m.content for m in p.agent.history if m.role == "assistant" and not m.tool_calls]
    # Trimmed to the words heard, like a streamed answer: a start of the first sentence.
    assert spoken[0] and "On Sunday we are closed.".startswith(spoken[0]), spoken
    assert len(llm.calls) >= 1


async def test_respond_with_tools_returns_the_speak_text() -> None:
    clock = MemoryMediaIO().clock
    llm = ScriptedLLM([Reply([], tool_calls=(ToolCall("c1", "hours", {"day": "Sunday"}),))], clock)
    agent = Agent(llm, tools=[hours])
    event = await agent.respond_with_tools("are you open on sunday")
    assert event.text == "On Sunday we are closed. Our shop opens again on Monday at nine."
    assert event.tool_calls == ()
    assert len(llm.calls) == 1
    assert agent.history[-1].role == "assistant"
    assert isinstance(Speak("x"), str)


async def test_a_turn_answered_by_speak_alone_has_every_stage_timed() -> None:
    """No text before the tool call: the agent's first output is the Speak text, so the
    turn's split still reads stt / agent / tts (it printed "agent -, tts -")."""
    call = ToolCall("c1", "hours", {"day": "Sunday"})
    p, _llm, _tts, _events = await _run_turn([Reply([], tool_calls=(call,))], [hours])
    (m,) = p.metrics
    assert m.llm_ms is not None and m.tts_ms is not None and m.total_ms is not None
