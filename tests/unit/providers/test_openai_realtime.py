"""OpenAIRealtimeEngine through the real openai SDK against FakeOpenAIRealtime.

The fake speaks the Realtime WebSocket protocol on loopback; the media is a
MemoryMediaIO on the real clock (a server is involved: virtual time would race ahead of
it). Each test's audio is a second or two.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from voxtra.errors import CallEnded, ProviderError
from voxtra.media.frames import AudioChunk, Codec
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
from voxtra.pipeline.io import MonotonicClock
from voxtra.pipeline.pipeline import EndReason, ProviderTimeout
from voxtra.pipeline.testing import MemoryMediaIO, silence_frames, tone_frames
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine
from voxtra.testing.fakes.openai_realtime import FakeOpenAIRealtime, RealtimeReply

KEY = "sk-test"


def engine_for(fake: FakeOpenAIRealtime, **options: Any) -> OpenAIRealtimeEngine:
    return OpenAIRealtimeEngine(KEY, "gpt-realtime", base_url=fake.base_url, **options)


@asynccontextmanager
async def attached(
    engine: OpenAIRealtimeEngine, media: MemoryMediaIO
) -> AsyncIterator[list[PipelineEvent]]:
    events: list[PipelineEvent] = []
    engine.on_event(events.append)
    async with engine.attach(media, clock=media.clock, call_id="c1"):
        yield events


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def speak(media: MemoryMediaIO, ms: int = 400, then_silence: int = 700) -> None:
    """The caller says something: a tone the fake's VAD hears, then silence."""
    media.inject(tone_frames(ms, level_db=-20))
    media.inject(silence_frames(then_silence))


async def test_say_plays_the_models_ulaw_untouched() -> None:
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake, voice="cedar", system_prompt="Be brief.")
        assert isinstance(engine, ConversationEngine)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media):
            result = await engine.say("Hello there, caller.")
        (conn,) = fake.connections
    assert not result.interrupted
    assert result.heard_text == "Hello there, caller."
    assert result.played_ms == pytest.approx(900)  # 3 words, 300 ms each
    # u-law 8 kHz in and out: the service's audio goes to the transport as it came
    assert conn.query["model"] == "gpt-realtime"
    assert conn.headers["Authorization"] == f"Bearer {KEY}"
    assert conn.input_format == conn.output_format == "audio/pcmu"
    assert {(c.codec, c.sample_rate) for c in media.received} == {(Codec.ULAW, 8000)}
    assert sum(c.duration_ms for c in media.received) == pytest.approx(900)
    assert media.played_audio_ms() == pytest.approx(900)
    session = conn.of("session.update")[0]["session"]
    assert session["instructions"] == "Be brief."
    assert session["audio"]["output"]["voice"] == "cedar"
    detection = session["audio"]["input"]["turn_detection"]
    # attached for say/listen: the model does not answer on its own, and the engine
    # (not the service) decides what a barge-in cancels
    assert detection["create_response"] is False and detection["interrupt_response"] is False
    (create,) = conn.of("response.create")
    assert create["response"]["instructions"].endswith("\nHello there, caller.")
    # the caller's audio went up as u-law too
    assert conn.audio_bytes > 0 and conn.audio_bytes % 160 == 0
    assert [m.content for m in engine.history if m.role == "assistant"] == ["Hello there, caller."]


async def test_listen_returns_the_input_transcription_and_the_model_stays_quiet() -> None:
    async with FakeOpenAIRealtime(KEY, transcripts=["what are your opening hours"]) as fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            speak(media)
            turn = await engine.listen(timeout=5)
            nothing = await engine.listen(timeout=0.3)
        (conn,) = fake.connections
    assert turn is not None and turn.text == "what are your opening hours" and turn.is_final
    assert nothing is None
    assert conn.of("response.create") == []  # listen() does not make the model answer
    kinds = [type(e) for e in events]
    assert kinds.index(SpeechStartedEvent) < kinds.index(SpeechEndedEvent)
    partials = [e for e in events if isinstance(e, UserTranscriptEvent) and not e.is_final]
    assert [p.text for p in partials] == ["what are your opening hours"]
    assert [(m.role, m.content) for m in engine.history] == [
        ("user", "what are your opening hours")
    ]


async def test_barge_in_flushes_cancels_and_truncates_at_what_was_heard() -> None:
    words = " ".join(f"word{i}" for i in range(20))  # 6 s of answer
    # one 100 ms chunk per 100 ms: the response is still in progress when cut
    async with FakeOpenAIRealtime(KEY, chunk_delay=0.1) as fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            say = asyncio.create_task(engine.say(words))
            await until(lambda: media.played_ms >= 700)
            speak(media, 300, 200)
            result = await asyncio.wait_for(say, 5)
            await until(lambda: bool(fake.connections[0].truncations))
            flushed_at = media.flushes[0]
            await asyncio.sleep(0.3)
        (conn,) = fake.connections
    assert result.interrupted
    (barge,) = [e for e in events if isinstance(e, BargeInEvent)]
    (truncation,) = conn.truncations
    # what the caller heard: the transport's played audio of this answer at the flush
    assert truncation["audio_end_ms"] == int(result.played_ms)
    assert 700 <= result.played_ms < 3000
    assert barge.played_ms == result.played_ms and barge.heard_text == result.heard_text
    assert conn.cancels == 1  # the answer was still being generated
    # nothing of the answer played after the flush
    assert media.played_audio_ms(since=flushed_at + 0.001) == 0
    heard_words = result.heard_text.split()
    assert heard_words == words.split()[: len(heard_words)]
    assert len(heard_words) <= int(result.played_ms // 300) + 1
    # the engine's history and the service's agree on what was said
    assistant = [m.content for m in engine.history if m.role == "assistant"]
    assert assistant == [result.heard_text]
    assert conn.history()[0] == (
        "assistant",
        " ".join(words.split()[: int(truncation["audio_end_ms"] // 300)]),
    )


async def test_a_say_that_is_not_interruptible_plays_through() -> None:
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media):
            say = asyncio.create_task(engine.say("one two three four", interruptible=False))
            await until(lambda: media.played_ms >= 300)
            speak(media, 300, 100)
            result = await asyncio.wait_for(say, 5)
        (conn,) = fake.connections
    assert not result.interrupted and result.played_ms == pytest.approx(1200)
    assert conn.truncations == [] and conn.cancels == 0 and media.flushes == []


async def test_converse_answers_each_turn_and_measures_it() -> None:
    fake = FakeOpenAIRealtime(
        KEY,
        transcripts=["hello"],
        replies=[RealtimeReply(text="Hi, how can I help?")],
    )
    async with fake:
        engine = engine_for(fake, greeting="Welcome.")
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        run = asyncio.create_task(engine.run(media, clock=media.clock, call_id="c1"))
        await until(lambda: media.played_ms >= 300)  # "Welcome." played
        speak(media)
        await until(lambda: any(isinstance(e, TurnMetrics) for e in events))
        await until(lambda: media.queued_ms == 0 and media.played_ms >= 1700)
        media.hangup()
        reason = await asyncio.wait_for(run, 5)
        (conn,) = fake.connections
    assert reason is EndReason.HANGUP
    detection = conn.of("session.update")[0]["session"]["audio"]["input"]["turn_detection"]
    assert detection["create_response"] is True
    (metrics,) = [e for e in events if isinstance(e, TurnMetrics)]
    assert metrics.speech_end is not None and metrics.first_frame_out is not None
    assert metrics.total_ms is not None and 0 < metrics.total_ms < 3000
    answers = [e.text for e in events if isinstance(e, AgentResponseEvent)]
    assert answers == ["Welcome.", "Hi, how can I help?"]
    assert [(m.role, m.content) for m in engine.history] == [
        ("assistant", "Welcome."),
        ("user", "hello"),
        ("assistant", "Hi, how can I help?"),
    ]


async def test_a_tool_call_round_trip_does_not_hold_the_audio() -> None:
    calls: list[str] = []

    async def get_weather(city: str) -> dict[str, str]:
        """The weather in a city.

        Args:
            city: the city's name
        """
        calls.append(city)
        await asyncio.sleep(0.5)  # a slow tool
        return {"city": city, "sky": "sunny"}

    fake = FakeOpenAIRealtime(
        KEY,
        transcripts=["weather in paris"],
        replies=[
            RealtimeReply(tool_calls=[("get_weather", {"city": "Paris"})]),
            RealtimeReply(text="It is sunny in Paris."),
        ],
    )
    async with fake:
        # a deadline shorter than the tool: the tool's run is not the model's to answer in
        engine = engine_for(fake, tools=[get_weather], llm_timeout=0.4)
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        run = asyncio.create_task(engine.run(media, clock=media.clock))
        await fake.wait_connections(1)
        speak(media)
        await until(lambda: bool(calls))
        audio_at_call = fake.connections[0].audio_bytes
        await until(lambda: len([e for e in events if isinstance(e, AgentResponseEvent)]) == 2)
        audio_after = fake.connections[0].audio_bytes
        await until(lambda: media.queued_ms == 0)
        media.hangup()
        await asyncio.wait_for(run, 5)
        (conn,) = fake.connections
    assert calls == ["Paris"]
    # the caller's audio kept going up while the tool ran (0.5 s = 4000 bytes of u-law)
    assert audio_after - audio_at_call >= 3000
    tools = conn.of("session.update")[0]["session"]["tools"]
    assert tools == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "the city's name"}},
                "required": ["city"],
            },
        }
    ]
    (output,) = [e["item"] for e in conn.of("conversation.item.create")]
    assert output["type"] == "function_call_output"
    assert json.loads(output["output"]) == {"city": "Paris", "sky": "sunny"}
    assert len(conn.of("response.create")) == 1  # the one after the tool's result
    kinds = [k for k, _ in conn.history()]
    assert kinds == ["user", "function_call", "function_call_output", "assistant"]
    first, second = [e for e in events if isinstance(e, AgentResponseEvent)]
    assert first.tool_calls[0].name == "get_weather" and first.tool_calls[0].arguments == {
        "city": "Paris"
    }
    assert second.text == "It is sunny in Paris."
    assert media.played_audio_ms() == pytest.approx(1500)
    assert not [e for e in events if isinstance(e, ProviderErrorEvent)]


async def test_a_dropped_socket_is_reconnected_with_the_conversation() -> None:
    async with FakeOpenAIRealtime(KEY, transcripts=["my name is ann"]) as fake:
        engine = engine_for(fake, system_prompt="You are a bakery.", reconnect_delay=0.05)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            await engine.say("Hello.")
            speak(media)
            assert (await engine.listen(timeout=5)) is not None
            fake.drop()
            await fake.wait_connections(2)
            await until(lambda: len(fake.connections[1].of("conversation.item.create")) == 2)
            again = await engine.say("Still here.")
        _, second = fake.connections
    assert not again.interrupted and again.heard_text == "Still here."
    errors = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert len(errors) == 1 and "connection lost" in errors[0].message
    restored = second.of("session.update")[0]["session"]
    assert restored["instructions"] == "You are a bakery."
    items = [e["item"] for e in second.of("conversation.item.create")]
    assert [(i["role"], i["content"]) for i in items] == [
        ("assistant", [{"type": "output_text", "text": "Hello."}]),
        ("user", [{"type": "input_text", "text": "my name is ann"}]),
    ]
    assert second.history()[:2] == [("assistant", "Hello."), ("user", "my name is ann")]


async def test_a_transcript_lost_with_the_socket_does_not_hold_listen() -> None:
    """The socket drops after the caller stopped speaking, before the service sent the
    transcript: that transcript never comes, and listen(timeout) still ends on the
    silence (it waited for it forever, until the caller spoke again)."""
    async with FakeOpenAIRealtime(KEY, transcripts=["lost with the socket"]) as fake:
        engine = engine_for(fake, reconnect_delay=0.05)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            fake.drop_before = "conversation.item.input_audio_transcription.completed"
            speak(media)
            await fake.wait_connections(2)
            heard = await asyncio.wait_for(engine.listen(timeout=0.3), 3)
    assert heard is None
    assert any(isinstance(e, SpeechEndedEvent) for e in events)
    (error,) = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert "connection lost" in error.message
    assert not [e for e in events if isinstance(e, UserTranscriptEvent) and e.is_final]


async def test_a_failed_reconnect_fails_say_and_listen_with_a_provider_error() -> None:
    fake = FakeOpenAIRealtime(KEY)
    async with fake:
        engine = engine_for(fake, reconnect_attempts=2, reconnect_delay=0.01)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            fake.reject = 5
            fake.drop()
            with pytest.raises(ProviderError, match="reconnect failed"):
                await asyncio.wait_for(engine.listen(), 5)
            with pytest.raises(ProviderError, match="reconnect failed"):
                await engine.say("anyone?")
    assert [e.stage for e in events if isinstance(e, ProviderErrorEvent)] == ["realtime"] * 2


async def test_a_bad_key_is_a_provider_error_at_attach() -> None:
    async with FakeOpenAIRealtime("right-key") as fake:
        engine = OpenAIRealtimeEngine("wrong-key", base_url=fake.base_url)
        with pytest.raises(ProviderError, match=r"cannot connect.*401"):
            async with engine.attach(MemoryMediaIO(virtual=False)):
                pass


async def test_the_key_never_shows_in_the_websocket_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, websockets logs each handshake header in clear: the key went into the
    app's log (deepgram-sdk masks Authorization there, but only once it is imported)."""
    key = "sk-leak-canary-31d7e2"
    caplog.set_level(logging.DEBUG)
    async with FakeOpenAIRealtime(key) as fake:
        engine = OpenAIRealtimeEngine(key, base_url=fake.base_url)
        async with engine.attach(MemoryMediaIO(virtual=False)):
            pass
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("> Authorization: Bearer ") for m in logged)  # (logged, masked)
    assert [m for m in logged if key in m] == []


async def test_service_errors_are_events_and_a_failed_say_raises() -> None:
    async with FakeOpenAIRealtime(KEY, replies=[]) as fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            await fake.send_error("The server had an error.")
            await until(lambda: any(isinstance(e, ProviderErrorEvent) for e in events))
            fake.fail_next = "model overloaded"
            with pytest.raises(ProviderError, match="response failed: model overloaded"):
                await engine.say("first")
            after = await engine.say("second")  # the session goes on
    first, second = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert "The server had an error." in first.message and first.stage == "realtime"
    assert "model overloaded" in second.message
    assert after.heard_text == "second"


async def test_hangup_ends_listen_with_call_ended() -> None:
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media):
            listen = asyncio.create_task(engine.listen())
            await asyncio.sleep(0.1)
            media.hangup()
            with pytest.raises(CallEnded):
                await asyncio.wait_for(listen, 5)


class SlowFlushMedia(MemoryMediaIO):
    """A transport whose flush empties the queue, then takes 60 ms to return (as
    one that waits for its sender would): say() polls in between (it returned the
    cut answer as played to its end, ``interrupted=False``, before the fix)."""

    async def flush(self) -> None:
        await super().flush()
        await asyncio.sleep(0.06)


@pytest.mark.parametrize("media_class", [MemoryMediaIO, SlowFlushMedia])
async def test_barge_in_after_the_answer_was_generated_truncates_without_cancel(
    media_class: type[MemoryMediaIO],
) -> None:
    """The service sends audio faster than real time: most cuts land after
    ``response.done``, while the transport still plays the queued answer."""
    async with FakeOpenAIRealtime(KEY, chunk_delay=0) as fake:
        engine = engine_for(fake)
        media = media_class(virtual=False)
        async with attached(engine, media):
            say = asyncio.create_task(engine.say(" ".join(["word"] * 10)))
            await until(lambda: media.played_ms >= 500)
            speak(media, 300, 200)
            result = await asyncio.wait_for(say, 5)
            await until(lambda: bool(fake.connections[0].truncations))
        (conn,) = fake.connections
    assert len(media.flushes) == 1
    assert result.interrupted and 500 <= result.played_ms < 3000
    assert conn.cancels == 0  # nothing left to cancel: only the truncation
    assert conn.truncations[0]["audio_end_ms"] == int(result.played_ms)


async def test_pcm_format_converts_once_each_way() -> None:
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake, audio_format="pcm")
        media = MemoryMediaIO(virtual=False)  # u-law 8 kHz frames, as a phone's
        async with attached(engine, media):
            result = await engine.say("one two")
        (conn,) = fake.connections
    assert conn.input_format == "audio/pcm" and conn.output_format == "audio/pcm"
    assert result.played_ms == pytest.approx(600)
    assert {(c.codec, c.sample_rate) for c in media.received} == {(Codec.PCM16, 24000)}
    # 20 ms of u-law (160 bytes) went up as 20 ms of 24 kHz PCM16 (960 bytes)
    assert conn.audio_bytes > 0 and conn.audio_bytes % 960 == 0


async def test_converse_after_say_restores_the_history_on_its_own_session() -> None:
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake, max_duration=0.5)
        media = MemoryMediaIO(virtual=False)
        async with engine.attach(media, clock=media.clock):
            await engine.say("Hello there.")
        media = MemoryMediaIO(virtual=False)  # (a MemoryMediaIO's frames() runs once)
        reason = await engine.run(media, clock=media.clock)
        first, second = fake.connections
    assert reason is EndReason.MAX_DURATION
    assert first.closed
    items = [e["item"] for e in second.of("conversation.item.create")]
    assert items == [
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there."}],
            "id": items[0]["id"],
        }
    ]
    detection = second.of("session.update")[0]["session"]["audio"]["input"]["turn_detection"]
    assert detection["create_response"] is True


FALLBACK = "Sorry, could you say that again?"


async def test_a_turn_the_service_never_answers_gets_the_fallback_then_the_next_works() -> None:
    """The socket alive, the model silent after ``response.created``: the turn's deadline
    gives it up (event, ``response.cancel``) and ``fallback_tts`` speaks the line; the
    caller talks over it (a barge-in, nothing sent to the service for it), and that turn
    is answered as usual."""
    fake = FakeOpenAIRealtime(
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
        await until(lambda: any(isinstance(e, ProviderErrorEvent) for e in events))
        await until(lambda: media.played_ms >= 500)  # the line plays (1.56 s of it)...
        speak(media)  # ...and the caller talks over it
        await until(lambda: any(isinstance(e, AgentResponseEvent) for e in events))
        await until(lambda: media.queued_ms == 0)
        media.hangup()
        assert await asyncio.wait_for(run, 5) is EndReason.HANGUP
        (conn,) = fake.connections
    (error,) = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert (error.provider, error.stage, error.timed_out) == ("openai-realtime", "realtime", True)
    assert error.message == "TimeoutError: no answer within 0.5 s"
    turn_end = next(e for e in events if isinstance(e, SpeechEndedEvent))
    assert 0.5 <= error.at - turn_end.at < 0.9
    (cancel,) = conn.of("response.cancel")  # the hung response, by its id
    assert cancel["response_id"].startswith("resp_") and conn.cancels == 1
    # the line came from fallback_tts (espeak's 22.05 kHz PCM), the answer in u-law
    formats = {(c.codec, c.sample_rate) for c in media.received}
    assert formats == {(Codec.PCM16, 22050), (Codec.ULAW, 8000)}
    answer = [c for c in media.received if c.codec is Codec.ULAW]
    assert sum(c.duration_ms for c in answer) == pytest.approx(600)
    # the barge-in cut the line (nothing of it played after the flush) and told the
    # service nothing: it never had that audio
    (barge,) = [e for e in events if isinstance(e, BargeInEvent)]
    assert 500 <= barge.played_ms < 1500 and media.flushes
    assert media.played_audio_ms(since=media.flushes[0] + 0.001) == pytest.approx(600)
    heard = barge.heard_text.split()
    assert heard and heard == FALLBACK.split()[: len(heard)]
    assert conn.truncations == []
    assert [e.text for e in events if isinstance(e, AgentResponseEvent)] == ["Hi there."]
    assert len([e for e in events if isinstance(e, TurnMetrics)]) == 1  # the answered turn
    assert [(m.role, m.content) for m in engine.history] == [
        ("user", "hello"),
        ("assistant", barge.heard_text),
        ("user", "hello again"),
        ("assistant", "Hi there."),
    ]


async def test_a_say_the_service_never_answers_raises_in_time() -> None:
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake, llm_timeout=0.3)
        media = MemoryMediaIO(virtual=False)
        async with attached(engine, media) as events:
            fake.silent_next = 1
            started = media.clock.now()
            with pytest.raises(ProviderTimeout, match=r"no answer within 0\.3 s"):
                await asyncio.wait_for(engine.say("Hello."), 3)
            waited = media.clock.now() - started
            again = await asyncio.wait_for(engine.say("Still here."), 3)
        (conn,) = fake.connections
    assert 0.3 <= waited < 0.6
    (error,) = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert error.timed_out and error.stage == "realtime"
    first, _ = conn.of("response.create")
    (cancel,) = conn.of("response.cancel")
    assert cancel["response_id"].startswith("resp_") and conn.cancels == 1
    assert first["response"]["instructions"].endswith("\nHello.")
    assert not again.interrupted and again.heard_text == "Still here."
    assert media.played_audio_ms() == pytest.approx(600)  # the second say only
    assert [(m.role, m.content) for m in engine.history] == [("assistant", "Still here.")]


class FirstAudioMedia(MemoryMediaIO):
    """MemoryMediaIO on the real clock that tells when the first audio is sent to it."""

    def __init__(self) -> None:
        super().__init__(virtual=False)
        self.first_audio = asyncio.Event()

    async def send(self, chunk: AudioChunk) -> None:
        self.first_audio.set()
        await super().send(chunk)


class DeadlineAtFirstAudio:
    """The real clock, but a wait as long as a ``say``'s deadline (``llm_timeout``, over
    30 s here) ends the moment the first answer audio reaches the transport."""

    def __init__(self, media: FirstAudioMedia) -> None:
        self.media = media
        self.real = MonotonicClock()

    def now(self) -> float:
        return self.real.now()

    async def sleep(self, seconds: float) -> None:
        if seconds > 30:
            await self.media.first_audio.wait()
            return
        await self.real.sleep(seconds)


async def test_a_say_whose_first_audio_comes_with_its_deadline_plays_whole() -> None:
    """The deadline passed as the first chunk was being sent: the timer won the wait,
    so say raised ProviderTimeout, reported a timeout and cancelled the answer, while
    that first chunk (100 ms) played. Audio on its way at the deadline came in time."""
    async with FakeOpenAIRealtime(KEY) as fake:
        engine = engine_for(fake, llm_timeout=60.0)
        media = FirstAudioMedia()
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        async with engine.attach(media, clock=DeadlineAtFirstAudio(media)):
            said = await asyncio.wait_for(engine.say("Hello there."), 5)
        (conn,) = fake.connections
    assert not said.interrupted and said.heard_text == "Hello there."
    assert said.played_ms == pytest.approx(600) and media.played_audio_ms() == pytest.approx(600)
    assert not [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert conn.of("response.cancel") == []
    assert [(m.role, m.content) for m in engine.history] == [("assistant", "Hello there.")]


class _BrokenTTS(EspeakTTS):
    """A fallback TTS whose service fails, as ElevenLabs' does: a ProviderError."""

    async def synthesize(self, text: str) -> AsyncIterator[Any]:  # type: ignore[override]
        raise ProviderError("elevenlabs", "HTTP 503: busy")
        yield  # (an async generator)


async def test_a_failing_fallback_tts_is_logged_and_the_conversation_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found in review: the fallback TTS's ProviderError was taken for the service's
    connection failing, and passed over without a word in the log."""
    fake = FakeOpenAIRealtime(
        KEY, transcripts=["hello", "hello again"], replies=[RealtimeReply("Hi there.")]
    )
    async with fake:
        engine = engine_for(
            fake, llm_timeout=0.3, fallback_text=FALLBACK, fallback_tts=_BrokenTTS()
        )
        media = MemoryMediaIO(virtual=False)
        events: list[PipelineEvent] = []
        engine.on_event(events.append)
        with caplog.at_level(logging.WARNING, logger="voxtra"):
            run = asyncio.create_task(engine.run(media, clock=media.clock))
            await fake.wait_connections(1)
            fake.silent_next = 1
            speak(media)
            await until(lambda: any(isinstance(e, ProviderErrorEvent) for e in events))
            await asyncio.sleep(0.2)
            speak(media)  # the next turn is answered as usual
            await until(lambda: any(isinstance(e, AgentResponseEvent) for e in events))
            media.hangup()
            assert await asyncio.wait_for(run, 5) is EndReason.HANGUP
    assert any("the fallback TTS failed" in r.getMessage() for r in caplog.records)
    assert [e.text for e in events if isinstance(e, AgentResponseEvent)] == ["Hi there."]
