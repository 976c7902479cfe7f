"""VoicePipeline end to end on MemoryMediaIO (virtual clock) with scripted providers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from voxtra.errors import CallEnded, ProviderError
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SilenceTimeoutEvent,
    SpeechStartedEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from voxtra.pipeline.pipeline import EndReason, VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, silence_frames, tone_frames
from voxtra.providers.base import ToolCall

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS, words

LONG = (
    "Our opening hours are nine to five on weekdays. On Saturdays we open at ten. "
    "On Sundays we are closed, but the online shop stays open all day and night."
)


def speak(media: MemoryMediaIO, ms: int = 600) -> None:
    """The caller says something: a loud tone, then silence."""
    media.inject(tone_frames(ms, level_db=-15))


def build(
    media: MemoryMediaIO,
    finals: list[str],
    replies: list[Reply],
    **kw: Any,
) -> tuple[VoicePipeline, ScriptedSTT, ScriptedLLM, ScriptedTTS, list[PipelineEvent]]:
    clock = media.clock
    stt = ScriptedSTT(finals, clock, **kw.pop("stt_kw", {}))
    llm = ScriptedLLM(replies, clock, **kw.pop("llm_kw", {}))
    tts = ScriptedTTS(clock, **kw.pop("tts_kw", {}))
    kw.setdefault("system_prompt", "You are a shop assistant.")
    p = VoicePipeline(stt, llm, tts, EnergyVAD(), **kw)
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    return p, stt, llm, tts, events


def of(events: list[PipelineEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_greeting_then_answer_streams_sentences_and_metrics() -> None:
    media = MemoryMediaIO()
    p, _stt, llm, tts, events = build(
        media,
        ["when are you open"],
        [Reply(words("We open at nine. We close at five."))],
        greeting="Hello, shop here.",
        llm_kw={"delay": 0.1},
    )
    reason: list[EndReason] = []

    async def caller() -> None:
        await media.wait_until(lambda: len(p.agent.history) == 2, 10)
        greeting_frames = len(media.played)
        assert greeting_frames * 20 == int(len("Hello, shop here.") * 50) // 20 * 20
        speak(media)
        await media.wait_until(lambda: bool(of(events, TurnMetrics)), 10)
        await media.wait_until(lambda: media.queued_ms == 0, 10)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        reason.append(await p.run(media, clock=media.clock, call_id="c1"))

    assert reason == [EndReason.HANGUP]
    assert [t for _, t in tts.requests] == [
        "Hello, shop here.",
        "We open at nine.",
        "We close at five.",
    ]
    # The first sentence went to TTS while the LLM was still streaming the second.
    first_sentence_at = tts.requests[1][0]
    assert llm.calls[0].finished is not None and first_sentence_at < llm.calls[0].finished
    roles = [(m.role, m.content) for m in p.agent.history]
    assert roles == [
        ("system", "You are a shop assistant."),
        ("assistant", "Hello, shop here."),
        ("user", "when are you open"),
        ("assistant", "We open at nine. We close at five."),
    ]
    finals = [e for e in of(events, UserTranscriptEvent) if e.is_final]
    partials = [e for e in of(events, UserTranscriptEvent) if not e.is_final]
    assert [e.text for e in finals] == ["when are you open"] and finals[0].confidence == 0.9
    assert [e.text for e in partials] == ["when"]
    assert of(events, AgentResponseEvent)[0].text == "We open at nine. We close at five."
    m = p.last_metrics
    assert m is not None and not m.interrupted
    assert None not in (
        m.speech_end,
        m.stt_final,
        m.llm_first_token,
        m.tts_first_byte,
        m.first_frame_out,
    )
    # Virtual clock: STT 0.1 s after the end of speech, LLM first token 0.1 s later,
    # TTS first byte 0.04 s after the first sentence completed (4 words at 0.1 s).
    assert m.stt_ms == pytest.approx(100, abs=21)
    assert m.llm_ms == pytest.approx(100, abs=21)
    assert m.tts_ms == pytest.approx(340, abs=41)
    assert m.total_ms is not None and m.total_ms == pytest.approx(540, abs=61)
    assert all(v is not None for v in m.as_dict().values())


async def test_barge_in_flushes_within_a_frame_and_trims_history() -> None:
    media = MemoryMediaIO()
    p, _stt, llm, _tts, events = build(
        media,
        ["hours", "thanks"],
        [Reply(words(LONG)), Reply(["You're welcome."])],
        llm_kw={"delay": 0.15},  # still generating when the caller cuts in
    )

    async def caller() -> None:
        speak(media)
        # Let about 1.5 s of the answer play, then talk over it.
        await media.wait_until(lambda: media.played_ms >= 1500, 20)
        speak(media, 400)
        await media.wait_until(lambda: bool(of(events, BargeInEvent)), 5)
        await media.wait_until(lambda: len(p.metrics) == 2 and media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)

    onset = of(events, SpeechStartedEvent)[1].at
    barge = of(events, BargeInEvent)[0]
    assert barge.at == onset
    assert media.flushes and media.flushes[0] - onset <= 0.02 + 1e-9
    # No frame of the long answer played after the frame during which the onset was seen.
    answer_frames = [f for f in media.played if f.at < media.flushes[0] + 1.0]
    assert max(f.at for f in answer_frames) <= onset + 0.02 + 1e-9
    # The caller heard about 1.5 s plus the 100 ms onset guard, at 50 ms per character.
    assert 1500 <= barge.played_ms <= 1700
    heard = barge.heard_text
    assert heard and LONG.startswith(heard.rstrip(".")) and len(heard) < len(LONG)
    assert abs(len(heard) * 50 - barge.played_ms) < 400
    assistant = [m for m in p.agent.history if m.role == "assistant"]
    assert assistant[0].content == heard
    assert assistant[1].content == "You're welcome."
    assert llm.calls[0].closed_early  # generation was stopped, not just muted
    assert p.metrics[0].interrupted and not p.metrics[1].interrupted
    # The next request to the LLM carried the trimmed answer.
    sent = [(m.role, m.content) for m in llm.calls[1].messages]
    assert ("assistant", heard) in sent and ("assistant", LONG) not in sent


async def test_llm_failure_speaks_fallback_and_call_goes_on() -> None:
    media = MemoryMediaIO()
    p, _stt, _llm, tts, events = build(
        media,
        ["first", "second"],
        [Reply(words("Let me check. And then more words"), fail_after=4), Reply(["Fine now."])],
        fallback_text="Sorry, say again?",
    )

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 2 and media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)

    errors = of(events, ProviderErrorEvent)
    assert [(e.provider, e.message) for e in errors] == [
        ("scripted-llm", "ConnectionError: llm stream broke")
    ]
    assert [t for _, t in tts.requests] == ["Let me check.", "Sorry, say again?", "Fine now."]
    history = [(m.role, m.content) for m in p.agent.history[1:]]
    assert history == [
        ("user", "first"),
        ("assistant", "Let me check."),
        ("assistant", "Sorry, say again?"),
        ("user", "second"),
        ("assistant", "Fine now."),
    ]


async def test_tts_failure_is_a_turn_error_not_a_dead_call() -> None:
    media = MemoryMediaIO()
    p, _stt, _llm, tts, events = build(
        media,
        ["one", "two"],
        [Reply(["Say BOOM please."]), Reply(["All good."])],
        tts_kw={"fail_on": "BOOM"},
    )

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 2 and media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)

    assert [e.provider for e in of(events, ProviderErrorEvent)] == ["scripted-tts"]
    assert [t for _, t in tts.requests][-2:] == [p.fallback_text, "All good."]
    # Nothing of the failed answer was played, so none of it stays in the history.
    assert "Say BOOM please." not in [m.content for m in p.agent.history]


async def test_tool_calls_run_and_results_feed_back() -> None:
    media = MemoryMediaIO()
    seen: list[str] = []

    async def order_status(order_id: str) -> dict[str, str]:
        """Look up an order."""
        seen.append(order_id)
        return {"status": "shipped"}

    call = ToolCall("call_1", "order_status", {"order_id": "A7"})
    p, _stt, llm, tts, _ = build(
        media,
        ["where is my order"],
        [Reply(["One moment."], tool_calls=(call,)), Reply(["It has shipped."])],
        tools=[order_status],
    )

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)

    assert seen == ["A7"]
    assert llm.calls[0].tools[0].name == "order_status"
    assert [(m.role, m.content) for m in llm.calls[1].messages][-3:] == [
        ("user", "where is my order"),
        ("assistant", "One moment."),
        ("tool", '{"status": "shipped"}'),
    ]
    assert [t for _, t in tts.requests] == ["One moment.", "It has shipped."]


async def test_say_and_listen_without_the_autonomous_loop() -> None:
    media = MemoryMediaIO()
    p, _stt, _llm, tts, events = build(media, ["yes please"], [])
    async with p.attach(media, clock=media.clock, call_id="c9"):
        t0 = media.clock.now()
        result = await p.say("Do you want a callback?")
        audio_ms = int(len("Do you want a callback?") * 50) // 20 * 20
        assert not result.interrupted and result.played_ms == audio_ms
        assert result.heard_text == "Do you want a callback?"
        # say() returns once the audio has played, not when it was queued.
        assert media.clock.now() - t0 >= audio_ms / 1000
        assert media.queued_ms == 0

        assert await p.listen(timeout=1.0) is None
        speak(media)
        heard = await p.listen(timeout=5.0)
        assert heard is not None and heard.text == "yes please" and heard.is_final

        # Interrupted say: the caller speaks half a second in.
        async def interrupt() -> None:
            await media.clock.sleep(0.5)
            speak(media, 300)

        async with anyio.create_task_group() as tg:
            tg.start_soon(interrupt)
            r2 = await p.say(LONG)
        assert r2.interrupted
        assert 500 <= r2.played_ms <= 700
        assert LONG.startswith(r2.heard_text) and r2.heard_text.count(" ") <= 3

        # A say that may not be interrupted plays through the caller's speech.
        async with anyio.create_task_group() as tg:
            tg.start_soon(interrupt)
            r3 = await p.say("Please hold the line.", interruptible=False)
        assert not r3.interrupted and r3.heard_text == "Please hold the line."
    assert [t for _, t in tts.requests] == [
        "Do you want a callback?",
        LONG,
        "Please hold the line.",
    ]
    assert len(of(events, BargeInEvent)) == 1


async def test_listen_raises_call_ended_on_hangup() -> None:
    media = MemoryMediaIO()
    p, *_ = build(media, [], [])

    async def hang() -> None:
        await media.clock.sleep(0.3)
        media.hangup()

    async with p.attach(media, clock=media.clock, call_id="c42"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hang)
            with pytest.raises(CallEnded) as info:
                await p.listen(timeout=30)
        assert info.value.call_id == "c42"
        with pytest.raises(CallEnded):
            await p.say("anyone there?")


async def test_listen_timeout_waits_for_caller_who_is_still_talking() -> None:
    media = MemoryMediaIO()
    p, *_ = build(media, ["a long answer"], [])
    async with p.attach(media, clock=media.clock):
        media.inject(silence_frames(800))
        speak(media, 1500)  # starts before the 1 s timeout, ends after it
        got = await p.listen(timeout=1.0)
        assert got is not None and got.text == "a long answer"


async def test_say_without_tts_raises() -> None:
    media = MemoryMediaIO()
    p = VoicePipeline(None, None, None, EnergyVAD())
    async with p.attach(media, clock=media.clock):
        with pytest.raises(RuntimeError, match="AI pipeline not configured"):
            await p.say("hi")
        with pytest.raises(RuntimeError, match="AI pipeline not configured"):
            await p.listen(1)
    with pytest.raises(RuntimeError, match="AI pipeline not configured"):
        await p.run(media)


async def test_silence_timeout_reprompts_then_ends() -> None:
    media = MemoryMediaIO()
    p, _stt, _llm, tts, events = build(
        media, [], [], silence_timeout=3.0, silence_prompt="Are you still there?"
    )
    reason = await p.run(media, clock=media.clock)
    assert reason is EndReason.SILENCE_TIMEOUT
    timeouts = of(events, SilenceTimeoutEvent)
    assert len(timeouts) == 2 and timeouts[0].seconds == 3.0
    assert timeouts[0].at == pytest.approx(3.0, abs=0.12)
    assert [t for _, t in tts.requests] == ["Are you still there?"]
    # The second timeout counts from the end of the prompt's playout.
    prompt_ms = int(len("Are you still there?") * 50) // 20 * 20
    assert timeouts[1].at - timeouts[0].at == pytest.approx(3.0 + 0.04 + prompt_ms / 1000, abs=0.15)


async def test_max_duration_ends_the_call() -> None:
    media = MemoryMediaIO()
    p, *_ = build(media, [], [], max_duration=2.0)
    assert await p.run(media, clock=media.clock) is EndReason.MAX_DURATION
    assert media.clock.now() == pytest.approx(2.0, abs=0.05)


async def test_stt_failure_reopens_the_stream() -> None:
    media = MemoryMediaIO()
    p, stt, _llm, _tts, events = build(
        media, ["after the glitch"], [Reply(["Got it."])], stt_kw={"fail_send_after": 5}
    )

    async def caller() -> None:
        await media.clock.sleep(1.5)
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    assert [e.provider for e in of(events, ProviderErrorEvent)] == ["scripted-stt"]
    assert len(stt.streams) == 2 and stt.streams[0].closed
    assert p.agent.history[-1].content == "Got it."


async def test_vad_failure_falls_back_to_energy_gate() -> None:
    media = MemoryMediaIO()
    clock = media.clock
    p = VoicePipeline(ScriptedSTT(["hello"], clock), None, None, EnergyVAD(fail=True))
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    async with p.attach(media, clock=clock):
        speak(media)
        got = await p.listen(5)
    assert got is not None and got.text == "hello"
    assert [e.provider for e in of(events, ProviderErrorEvent)] == ["energy-vad"]


async def test_event_iterator_and_queue_depths() -> None:
    media = MemoryMediaIO()
    p, *_ = build(media, ["hi"], [Reply(["Hello!"])])
    seen: list[PipelineEvent] = []

    async def reader() -> None:
        async for ev in p.events():
            seen.append(ev)

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
        assert p.queue_depths == {"finals": 0, "stt_audio": 0, "sentences": 0, "events": 0}
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    kinds = [type(e).__name__ for e in seen]
    assert kinds.index("SpeechStartedEvent") < kinds.index("SpeechEndedEvent")
    assert kinds[-2:] == ["AgentResponseEvent", "TurnMetrics"]


async def test_two_calls_keep_separate_histories() -> None:
    m1, m2 = MemoryMediaIO(), MemoryMediaIO()
    p1, *_ = build(m1, ["my card is 4111"], [Reply(["Noted."])])
    p2, _s2, llm2, _t2, _ = build(m2, ["what did the last caller say"], [Reply(["No idea."])])

    async def call(p: VoicePipeline, media: MemoryMediaIO) -> None:
        async def caller() -> None:
            speak(media)
            await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
            media.hangup()

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=media.clock)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, p1, m1)
        tg.start_soon(call, p2, m2)
    assert all("4111" not in m.content for m in p2.agent.history)
    assert all("4111" not in m.content for m in llm2.calls[0].messages)
    assert p1.agent.history is not p2.agent.history
    assert [m.content for m in p1.agent.history if m.role == "user"] == ["my card is 4111"]


async def test_say_tts_error_raises_provider_error() -> None:
    media = MemoryMediaIO()
    p, *_ = build(media, [], [], tts_kw={"fail_on": "x"})
    async with p.attach(media, clock=media.clock):
        with pytest.raises(ProviderError, match="scripted-tts"):
            await p.say("xylophone")


def test_voice_pipeline_is_a_conversation_engine() -> None:
    from voxtra.pipeline import ConversationEngine

    assert isinstance(VoicePipeline(), ConversationEngine)


async def test_greeting_tts_failure_does_not_end_the_call() -> None:
    media = MemoryMediaIO()
    p, _stt, _llm, tts, events = build(
        media,
        ["hello"],
        [Reply(["Hi there."])],
        greeting="Welcome BOOM",
        tts_kw={"fail_on": "BOOM"},
    )

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        assert await p.run(media, clock=media.clock) is EndReason.HANGUP
    assert [e.provider for e in of(events, ProviderErrorEvent)] == ["scripted-tts"]
    assert [t for _, t in tts.requests] == ["Welcome BOOM", "Hi there."]


async def test_barge_in_on_the_real_clock() -> None:
    media = MemoryMediaIO(virtual=False)
    p, *_, events = build(media, [], [], tts_kw={"first_byte": 0.0})

    async def interrupt() -> None:
        await anyio.sleep(0.3)
        speak(media, 300)

    async with p.attach(media, clock=media.clock), anyio.create_task_group() as tg:
        tg.start_soon(interrupt)
        result = await p.say(LONG)
    assert result.interrupted
    onset = of(events, SpeechStartedEvent)[0].at
    # Flushed in the same frame the onset was confirmed; nothing played after the flush.
    assert 0 <= media.flushes[0] - onset < 0.02
    assert max(f.at for f in media.played) <= media.flushes[0]
    # Onset guard (100 ms) after the caller's first frame at ~0.3 s.
    assert 350 <= result.played_ms <= 520


async def test_misuse_of_a_pipeline_raises_typed_errors() -> None:
    from voxtra.errors import VoxtraError
    from voxtra.pipeline.pipeline import PipelineInUse, PipelineNotAttached

    pipeline = VoicePipeline(tts=ScriptedTTS(MemoryMediaIO().clock))
    with pytest.raises(PipelineNotAttached) as caught:
        await pipeline.say("hello")
    assert isinstance(caught.value, VoxtraError) and isinstance(caught.value, RuntimeError)
    media = MemoryMediaIO()
    async with pipeline.attach(media, clock=media.clock):
        with pytest.raises(PipelineInUse):
            async with pipeline.attach(media, clock=media.clock):
                pass
        media.hangup()


async def test_interrupt_while_the_agent_thinks_drops_the_answer() -> None:
    # interrupt() from code (a key) before the answer's first audio: it used to be
    # ignored, as a caller's onset is (a noise must not eat the answer), and the whole
    # answer played after the key.
    media = MemoryMediaIO()
    p, _stt, llm, tts, events = build(
        media,
        ["tell me everything"],
        [Reply(words("Here is a very long answer. It goes on and on."))],
        llm_kw={"delay": 0.5},
    )

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: bool(llm.calls), 10)
        await p.interrupt()
        await media.wait_until(lambda: bool(of(events, TurnMetrics)), 10)
        await media.clock.sleep(1.0)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    metrics = of(events, TurnMetrics)
    assert len(metrics) == 1 and metrics[0].interrupted
    assert tts.requests == [] and media.played == []
    assert llm.calls[0].closed_early
    assert [m.content for m in p.agent.history if m.role == "assistant" and m.content] == []
