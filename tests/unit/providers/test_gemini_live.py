"""GeminiLiveEngine through the real google-genai SDK against FakeGeminiLive (TLS on
loopback, the Live API's messages). MemoryMediaIO on the real clock, as for OpenAI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from voxtra.errors import ProviderError
from voxtra.media.frames import Codec
from voxtra.pipeline import ConversationEngine
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SpeechEndedEvent,
    SpeechStartedEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from voxtra.pipeline.pipeline import EndReason, ProviderTimeout
from voxtra.pipeline.testing import MemoryMediaIO, silence_frames, tone_frames
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.gemini_live import GeminiLiveEngine
from voxtra.testing.fakes.gemini_live import FakeGeminiLive
from voxtra.testing.fakes.openai_realtime import RealtimeReply

KEY = "g-key"


def engine_for(fake: FakeGeminiLive, **options: Any) -> GeminiLiveEngine:
    return GeminiLiveEngine(
        KEY, base_url=fake.base_url, ssl_context=fake.client_ssl_context, **options
    )


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def speak(media: MemoryMediaIO, ms: int = 400, then_silence: int = 700) -> None:
    media.inject(tone_frames(ms, level_db=-20))
    media.inject(silence_frames(then_silence))


async def test_say_and_listen_with_one_conversion_each_way() -> None:
    async with FakeGeminiLive(KEY, transcripts=["what are your hours"]) as fake:
        engine = engine_for(fake, voice="Kore", system_prompt="You are a bakery.")
        assert isinstance(engine, ConversationEngine)
        media = MemoryMediaIO(virtual=False)
        async with engine.attach(media, clock=media.clock):
            said = await engine.say("Hello there.")
            speak(media)
            heard = await engine.listen(timeout=5)
            await asyncio.sleep(1.0)  # the model answers the turn by itself...
        (conn,) = fake.connections
    assert said.heard_text == "Hello there." and said.played_ms == pytest.approx(600)
    assert heard is not None and heard.text == "what are your hours"
    setup = conn.setup
    assert setup["model"].endswith("gemini-2.5-flash-native-audio-preview-12-2025")
    assert setup["systemInstruction"]["parts"][0]["text"] == "You are a bakery."
    voice = setup["generationConfig"]["speechConfig"]["voiceConfig"]
    assert voice["prebuiltVoiceConfig"]["voiceName"] == "Kore"
    assert conn.headers["x-goog-api-key"] == KEY
    # up: the phone's u-law converted once to 16 kHz PCM; down: 24 kHz PCM to the transport
    assert conn.audio_mime_types == {"audio/pcm;rate=16000"} and conn.audio_bytes % 640 == 0
    assert {(c.codec, c.sample_rate) for c in media.received} == {(Codec.PCM16, 24000)}
    # ...but attached for say/listen, that unasked answer is neither played nor kept
    assert media.played_audio_ms() == pytest.approx(600)
    assert [(m.role, m.content) for m in engine.history] == [
        ("system", "You are a bakery."),
        ("assistant", "Hello there."),
        ("user", "what are your hours"),
    ]


async def test_converse_with_a_tool_and_a_barge_in() -> None:
    def opening_hours(day: str) -> str:
        """When the shop is open on a day."""
        return f"{day}: nine to five"

    fake = FakeGeminiLive(
        KEY,
        transcripts=["are you open on monday", "stop"],
        replies=[
            RealtimeReply(tool_calls=[("opening_hours", {"day": "monday"})]),
            RealtimeReply(text=" ".join(["open"] * 20)),
            RealtimeReply(text="Sure."),
        ],
        chunk_delay=0.05,
    )
    async with fake:
        # deadlines short enough to fire if a tool's run or a barge-in counted against them
        engine = engine_for(fake, tools=[opening_hours], llm_timeout=0.4)
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        run = asyncio.create_task(engine.run(media, clock=media.clock))
        await fake.wait_connections(1)
        speak(media)
        await until(lambda: media.played_ms >= 1000)
        speak(media, 300, 700)
        await until(lambda: len([e for e in events if isinstance(e, TurnMetrics)]) == 2)
        await until(lambda: media.queued_ms == 0)
        media.hangup()
        assert await asyncio.wait_for(run, 5) is EndReason.HANGUP
        (conn,) = fake.connections
    declarations = conn.setup["tools"][0]["functionDeclarations"]
    assert declarations[0]["name"] == "opening_hours"
    assert declarations[0]["parametersJsonSchema"]["required"] == ["day"]
    (response,) = conn.of("toolResponse")
    result = response["functionResponses"][0]
    assert result["name"] == "opening_hours"
    assert result["response"] == {"result": "monday: nine to five"}
    (barge,) = [e for e in events if isinstance(e, BargeInEvent)]
    assert 1000 <= barge.played_ms < 4000 and conn.interruptions == 1
    first, second = [e for e in events if isinstance(e, TurnMetrics)]
    assert first.interrupted and not second.interrupted
    assert first.total_ms is not None
    answers = [e.text for e in events if isinstance(e, AgentResponseEvent)]
    assert answers == ["Sure."]
    roles = [(m.role, m.content) for m in engine.history]
    assert [r for r, _ in roles] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert roles[3][1] == barge.heard_text and roles[3][1].split() == ["open"] * len(
        roles[3][1].split()
    )
    assert roles[4:] == [("user", "stop"), ("assistant", "Sure.")]
    assert not [e for e in events if isinstance(e, ProviderErrorEvent)]


async def test_a_dropped_session_is_reconnected_with_the_history() -> None:
    """Without session resumption: a new session, the history sent as clientContent."""
    async with FakeGeminiLive(KEY, transcripts=["my name is ann"]) as fake:
        engine = engine_for(fake, reconnect_delay=0.05, session_resumption=False)
        events = await drop_after_a_turn(fake, engine)
        _, second = fake.connections
    assert len([e for e in events if isinstance(e, ProviderErrorEvent)]) == 1
    assert "sessionResumption" not in second.setup
    restored = second.of("clientContent")[0]
    assert restored["turnComplete"] is False
    assert [(t["role"], t["parts"][0]["text"]) for t in restored["turns"]] == [
        ("model", "Hello."),
        ("user", "my name is ann"),
    ]


async def drop_after_a_turn(
    fake: FakeGeminiLive, engine: GeminiLiveEngine, *, go_away: bool = False
) -> list[PipelineEvent]:
    """Say, hear the caller, drop the socket (or announce its end: ``go_away``), say
    again on the new session."""
    media = MemoryMediaIO(virtual=False)
    events: list[PipelineEvent] = []
    engine.on_event(events.append)
    async with engine.attach(media, clock=media.clock):
        await engine.say("Hello.")
        speak(media)
        assert (await engine.listen(timeout=5)) is not None
        if engine.session_resumption:  # the handle after the (muted) answer
            await until(lambda: len(fake.connections[0].handles) == 3)
        if go_away:
            await fake.go_away()
        else:
            fake.drop()
        await fake.wait_connections(2)
        await until(lambda: fake.connections[0].closed)
        again = await engine.say("Still here.")
    assert again.heard_text == "Still here."
    return events


async def test_a_dropped_session_is_resumed_with_its_handle() -> None:
    """Session resumption: the service keeps the conversation; nothing is re-sent."""
    async with FakeGeminiLive(KEY, transcripts=["my name is ann"]) as fake:
        engine = engine_for(fake, reconnect_delay=0.05)
        events = await drop_after_a_turn(fake, engine)
        first, second = fake.connections
    assert first.setup["sessionResumption"] == {}
    assert first.setup["contextWindowCompression"] == {"slidingWindow": {}}
    assert second.setup["sessionResumption"] == {"handle": first.handles[-1]}
    assert second.resumed_from == first.handles[-1]
    # the service's conversation goes on from where it was: nothing restored by hand
    assert second.turns[: len(first.turns)] == first.turns
    assert ("user", "my name is ann") in second.turns
    assert [
        m["clientContent"]["turnComplete"] for m in second.received if "clientContent" in m
    ] == [
        True  # the second say only
    ]
    assert len([e for e in events if isinstance(e, ProviderErrorEvent)]) == 1
    assert [(m.role, m.content) for m in engine.history] == [
        ("assistant", "Hello."),
        ("user", "my name is ann"),
        ("assistant", "Still here."),
    ]


async def test_a_refused_handle_falls_back_to_a_new_session_with_the_history() -> None:
    async with FakeGeminiLive(KEY, transcripts=["my name is ann"]) as fake:
        engine = engine_for(fake, reconnect_delay=0.05)
        await until_handles_forgotten(fake)
        events = await drop_after_a_turn(fake, engine)
        first, refused, third = fake.connections
    assert refused.setup["sessionResumption"] == {"handle": first.handles[-1]}
    assert refused.resumed_from is None and refused.closed
    assert third.setup["sessionResumption"] == {}
    restored = third.of("clientContent")[0]
    assert restored["turnComplete"] is False
    assert [(t["role"], t["parts"][0]["text"]) for t in restored["turns"]] == [
        ("model", "Hello."),
        ("user", "my name is ann"),
    ]
    assert len([e for e in events if isinstance(e, ProviderErrorEvent)]) == 1


async def test_go_away_moves_to_a_resumed_session_before_the_service_cuts_it() -> None:
    async with FakeGeminiLive(KEY, transcripts=["my name is ann"]) as fake:
        engine = engine_for(fake)
        events = await drop_after_a_turn(fake, engine, go_away=True)  # closed by the engine
        first, second = fake.connections
    assert second.resumed_from == first.handles[-1]
    assert not [e for e in events if isinstance(e, ProviderErrorEvent)]  # nothing lost
    assert [(m.role, m.content) for m in engine.history] == [
        ("assistant", "Hello."),
        ("user", "my name is ann"),
        ("assistant", "Still here."),
    ]


async def test_go_away_waits_for_a_say_whose_answer_has_not_started() -> None:
    """A move while the say's answer is due would lose it: the engine waits for the
    answer to end, then moves."""
    async with FakeGeminiLive(KEY) as fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        async with engine.attach(media, clock=media.clock):
            fake.think_s = 0.3
            say = asyncio.create_task(engine.say("Hello."))
            await until(lambda: bool(fake.connections[0].of("clientContent")))
            await fake.go_away()
            result = await asyncio.wait_for(say, 5)
            await fake.wait_connections(2)  # then it moved
            fake.think_s = 0.0
            again = await engine.say("Still here.")
        first, second = fake.connections
    assert result.heard_text == "Hello." and again.heard_text == "Still here."
    assert second.resumed_from == first.handles[-1]


async def test_go_away_waits_for_the_answer_to_the_callers_turn() -> None:
    """A goAway after the caller's question, before the answer started: moving then lost
    the answer (the handle predates the turn), and the question went unanswered with no
    error. The engine moves once the answer is over."""
    fake = FakeGeminiLive(
        KEY, transcripts=["when are you open"], replies=[RealtimeReply("From nine to five.")]
    )
    async with fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        run = asyncio.create_task(engine.run(media, clock=media.clock))
        await fake.wait_connections(1)
        fake.think_s = 0.3  # the answer starts 300 ms after the caller's turn ends
        speak(media)
        await until(lambda: any(isinstance(e, UserTranscriptEvent) for e in events))
        await fake.go_away()
        await fake.wait_connections(2)  # it moved...
        media.hangup()
        assert await asyncio.wait_for(run, 5) is EndReason.HANGUP
        first, second = fake.connections
    # ...after the answer
    assert [e.text for e in events if isinstance(e, AgentResponseEvent)] == ["From nine to five."]
    assert first.turns == [("user", "when are you open"), ("model", "From nine to five.")]
    assert second.resumed_from == first.handles[-1]
    assert not [e for e in events if isinstance(e, ProviderErrorEvent)]


async def until_handles_forgotten(fake: FakeGeminiLive) -> None:
    """The service forgets every handle it issues (as if each had expired)."""

    class Forgetful(dict[str, list[tuple[str, str]]]):
        def __setitem__(self, key: str, value: list[tuple[str, str]]) -> None:
            pass

    fake.handles = Forgetful()


async def test_the_key_never_shows_in_the_websocket_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, websockets logs each handshake header in clear: the key
    (``x-goog-api-key``) went into the app's log."""
    key = "g-leak-canary-7a90c4"
    caplog.set_level(logging.DEBUG)
    async with FakeGeminiLive(key) as fake:
        engine = GeminiLiveEngine(key, base_url=fake.base_url, ssl_context=fake.client_ssl_context)
        async with engine.attach(MemoryMediaIO(virtual=False)):
            pass
    logged = [r.getMessage() for r in caplog.records]
    assert "> x-goog-api-key: [redacted]" in logged
    assert [m for m in logged if key in m] == []


async def test_a_bad_key_is_a_provider_error() -> None:
    async with FakeGeminiLive("right") as fake:
        engine = GeminiLiveEngine(
            "wrong", base_url=fake.base_url, ssl_context=fake.client_ssl_context
        )
        with pytest.raises(ProviderError, match="cannot connect"):
            async with engine.attach(MemoryMediaIO(virtual=False)):
                pass


FALLBACK = "Sorry, could you say that again?"


async def test_a_turn_the_service_never_answers_gets_the_fallback_on_a_new_session() -> None:
    """The socket alive, nothing more from the service after the caller's turn: the
    deadline gives the answer up (event), the engine moves to a resumed session (the
    Live API cannot cancel an answer), ``fallback_tts`` speaks the line, and the next
    turn is answered on the new session."""
    fake = FakeGeminiLive(
        KEY, transcripts=["hello", "hello again"], replies=[RealtimeReply("Hi there.")]
    )
    async with fake:
        engine = engine_for(fake, llm_timeout=0.5, fallback_text=FALLBACK, fallback_tts=EspeakTTS())
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        run = asyncio.create_task(engine.run(media, clock=media.clock))
        await fake.wait_connections(1)
        fake.silent_next = 1
        speak(media)
        # Played in real time after espeak made it. CI failed here twice: not the time
        # (20 s failed as 5 s had) but MemoryMediaIO's queued_ms left at a float residue
        # after espeak's odd 22,050 Hz chunks, so "all played" never read 0 (fixed there).
        await until(lambda: any(m.content == FALLBACK for m in engine.history), 20.0)
        fallback = list(media.received)
        await fake.wait_connections(2)
        speak(media)
        await until(lambda: any(isinstance(e, AgentResponseEvent) for e in events), 20.0)
        await until(lambda: media.queued_ms == 0, 20.0)
        media.hangup()
        assert await asyncio.wait_for(run, 5) is EndReason.HANGUP
        first, second = fake.connections
    (error,) = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert (error.provider, error.stage, error.timed_out) == ("gemini-live", "realtime", True)
    assert error.message == "TimeoutError: no answer within 0.5 s"
    assert first.closed and second.resumed_from == first.handles[-1]
    # the caller's unanswered words went to the new session as text, not to be answered
    restored = second.of("clientContent")[0]
    assert restored["turnComplete"] is False
    assert [(t["role"], t["parts"][0]["text"]) for t in restored["turns"]] == [("user", "hello")]
    assert fallback and {(c.codec, c.sample_rate) for c in fallback} == {(Codec.PCM16, 22050)}
    answer = media.received[len(fallback) :]
    assert {(c.codec, c.sample_rate) for c in answer} == {(Codec.PCM16, 24000)}
    assert sum(c.duration_ms for c in answer) == pytest.approx(600)
    assert [e.text for e in events if isinstance(e, AgentResponseEvent)] == ["Hi there."]
    assert [(m.role, m.content) for m in engine.history] == [
        ("user", "hello"),
        ("assistant", FALLBACK),
        ("user", "hello again"),
        ("assistant", "Hi there."),
    ]


async def test_a_say_the_service_never_answers_raises_in_time() -> None:
    async with FakeGeminiLive(KEY) as fake:
        engine = engine_for(fake, llm_timeout=0.3)
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        async with engine.attach(media, clock=media.clock):
            fake.silent_next = 1
            started = media.clock.now()
            with pytest.raises(ProviderTimeout, match=r"no answer within 0\.3 s"):
                await asyncio.wait_for(engine.say("Hello."), 3)
            waited = media.clock.now() - started
            again = await asyncio.wait_for(engine.say("Still here."), 3)  # (new session)
        first, second = fake.connections
    assert 0.3 <= waited < 0.6
    (error,) = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert error.timed_out and error.stage == "realtime"
    assert second.resumed_from == first.handles[-1]
    assert again.heard_text == "Still here." and media.played_audio_ms() == pytest.approx(600)
    assert [(m.role, m.content) for m in engine.history] == [("assistant", "Still here.")]


async def test_a_say_the_caller_speaks_over_before_it_starts_ends_at_once() -> None:
    """The caller speaks (1.5 s) before the say's answer starts: the service drops that
    answer (``interrupted``) and answers the caller. The say waited out llm_timeout
    instead, raised ProviderTimeout with a timeout event, and moved to a new session in
    the middle of the caller's words: the first 0.6 s went to the old one, gone."""
    async with FakeGeminiLive(KEY, transcripts=["what time do you close"]) as fake:
        engine = engine_for(fake, llm_timeout=1.0)
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        async with engine.attach(media, clock=media.clock):
            fake.think_s = 0.3  # the say's answer would start 300 ms after the request
            started = media.clock.now()
            say = asyncio.create_task(engine.say("Hello."))
            media.inject(tone_frames(1500, level_db=-20))
            media.inject(silence_frames(800))
            said = await asyncio.wait_for(say, 5)
            waited = media.clock.now() - started
            heard = await engine.listen(timeout=5)
        assert len(fake.connections) == 1  # no move to a new session
    assert said.interrupted and said.heard_text == "" and said.played_ms == 0.0
    assert waited < 0.5  # at the caller's onset, not at the deadline (1 s)
    assert not [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert heard is not None and heard.text == "what time do you close"
    (ended,) = [e for e in events if isinstance(e, SpeechEndedEvent)]
    assert ended.speech_ms >= 1400  # the whole utterance, on one session
    assert media.played_audio_ms() == 0.0  # nor the answer to the caller (not asked for)
    assert [(m.role, m.content) for m in engine.history] == [("user", "what time do you close")]


async def test_a_say_given_up_while_the_caller_speaks_keeps_the_session() -> None:
    """The service hangs on a say sent while the caller speaks: its deadline passes in
    the middle of the caller's words. The say raises (the service did not answer), but
    the session stays: a move there cut the utterance in two, the old session taking
    its start away untranscribed."""
    async with FakeGeminiLive(KEY, transcripts=["what time do you close"]) as fake:
        engine = engine_for(fake, llm_timeout=0.3)
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        async with engine.attach(media, clock=media.clock):
            media.inject(tone_frames(1500, level_db=-20))
            media.inject(silence_frames(800))
            await until(lambda: any(isinstance(e, SpeechStartedEvent) for e in events))
            fake.silent_next = 1
            with pytest.raises(ProviderTimeout, match=r"no answer within 0\.3 s"):
                await asyncio.wait_for(engine.say("Hello."), 3)
            assert not any(isinstance(e, SpeechEndedEvent) for e in events)  # still speaking
            heard = await engine.listen(timeout=5)
        assert len(fake.connections) == 1  # no move to a new session
    (error,) = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert error.timed_out
    assert heard is not None and heard.text == "what time do you close"
    assert len([e for e in events if isinstance(e, SpeechStartedEvent)]) == 1
    (ended,) = [e for e in events if isinstance(e, SpeechEndedEvent)]
    assert ended.speech_ms >= 1400  # the whole utterance, on one session
    assert media.played_audio_ms() == 0.0
    assert [(m.role, m.content) for m in engine.history] == [("user", "what time do you close")]
