"""A real call on a speech-to-speech engine: a SIP phone, the sandbox Asterisk, real RTP,
and OpenAIRealtimeEngine talking through the openai SDK to FakeOpenAIRealtime.

The phone (pjsua2) plays espeak speech and records what it hears. The fake service hears
the question with its energy VAD and answers with a 440 Hz tone (300 ms per word of its
scripted answer); the caller then talks over the answer, and the test measures on the
phone's recording when the agent's audio stopped, and checks that the service's copy of
the answer was truncated at what the phone had heard.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.pipeline.events import BargeInEvent, PipelineEvent, TurnMetrics, UserTranscriptEvent
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine
from voxtra.testing import audio
from voxtra.testing.audio import synthesize_wav
from voxtra.testing.fakes.openai_realtime import FakeOpenAIRealtime, RealtimeReply
from voxtra.testing.sipcaller import SipCaller

if TYPE_CHECKING:
    from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

ANSWER = " ".join(["open"] * 20)  # 6 s of answer audio
BARGE_IN_BOUND_S = 0.40
"""The pipeline's bound for the same measurement (target 150 ms; see the report below)."""


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_realtime_call_answers_and_is_cut_by_the_caller(
    asterisk: AsteriskTarget, tmp_path: Path
) -> None:
    question = await synthesize_wav("what are your opening hours", tmp_path / "q.wav")
    interrupt = await synthesize_wav("wait a moment please", tmp_path / "i.wav")
    service = FakeOpenAIRealtime(
        "k",
        transcripts=["what are your opening hours", "wait a moment please"],
        replies=[RealtimeReply(text=ANSWER), RealtimeReply(text="Sure.")],
        chunk_delay=0.05,  # twice real time: the answer is still generated when cut
    )
    events: list[PipelineEvent] = []
    async with service:
        voice = VoiceConfig(engine=OpenAIRealtimeEngine.factory("k", base_url=service.base_url))
        app = VoxtraApp(
            ari_url=asterisk.ari_url,
            username=asterisk.username,
            password=asterisk.password,
            app_name=f"voxtra-rt-{uuid.uuid4().hex[:8]}",
            environ={},
            handler_deadline=2.0,
            voice=voice,
        )

        async def handler(call: CallSession) -> None:
            assert call.engine is not None and call.pipeline is None
            call.engine.on_event(events.append)
            await call.converse()

        await app.start()
        try:
            async with SipCaller(workdir=tmp_path) as phone:
                await phone.listen(record=True)
                await app.originate(
                    f"PJSIP/sipcaller/sip:test@127.0.0.1:{phone.port}",
                    handler=handler,
                    timeout=10,
                )
                call = await phone.next_incoming_call(10)
                await call.wait_answered(10)
                await call.wait_media(10)
                await service.wait_connections(1)
                await asyncio.sleep(0.5)
                await call.play(question)
                await call.wait_play_done(15)
                asked_at = call.event_time("play_started", path=str(question))
                # the answer is playing (the service added it after the question's
                # item): talk over it about two seconds in
                await until(lambda: len(service.connections[0].items) >= 2)
                await asyncio.sleep(2.5)
                await call.play(interrupt)
                await call.wait_play_done(15)
                interrupted_at = call.event_time("play_started", path=str(interrupt))
                await until(lambda: len([e for e in events if isinstance(e, TurnMetrics)]) == 2)
                await asyncio.sleep(1.0)
                await call.hangup()
                await call.wait_ended(10)
        finally:
            await app.stop()
        (conn,) = service.connections

    finals = [e.text for e in events if isinstance(e, UserTranscriptEvent) and e.is_final]
    assert finals == ["what are your opening hours", "wait a moment please"]
    first, second = [e for e in events if isinstance(e, TurnMetrics)]
    assert first.interrupted and not second.interrupted
    assert first.total_ms is not None
    (barge,) = [e for e in events if isinstance(e, BargeInEvent)]
    (truncation,) = conn.truncations
    assert truncation["audio_end_ms"] == int(barge.played_ms)
    assert conn.cancels == 1

    # The phone's recording: the answer (a 440 Hz tone) heard, then cut soon after the
    # caller began to speak.
    assert call.recording_path is not None and asked_at is not None
    assert interrupted_at is not None
    samples, rate = audio.read_wav(call.recording_path)
    answer_start = audio.onset_after(samples, rate, call.recording_offset(asked_at))
    assert answer_start is not None
    heard = samples[int(answer_start * rate) : int((answer_start + 1.0) * rate)]
    assert abs(audio.dominant_frequency(heard, rate) - 440) < 20
    onset = call.recording_offset(interrupted_at)
    stopped = audio.offset_after(samples, rate, onset, hold_ms=800)
    assert stopped is not None
    stop_ms = (stopped - onset) * 1000
    print(
        f"\nrealtime: speech end -> first audio {first.total_ms:.1f} ms (fake: at once); "
        f"barge-in: agent audio stopped {stop_ms:.0f} ms after the caller's onset; "
        f"truncated at {truncation['audio_end_ms']} ms, "
        f"the phone heard {(stopped - answer_start) * 1000:.0f} ms"
    )
    assert 0 < stop_ms < BARGE_IN_BOUND_S * 1000
    # What the engine told the service was heard matches the phone's recording
    assert truncation["audio_end_ms"] == pytest.approx((stopped - answer_start) * 1000, abs=150)


async def test_a_gemini_live_call_answers_and_is_cut_by_the_caller(
    asterisk: AsteriskTarget, tmp_path: Path
) -> None:
    """The same call on GeminiLiveEngine (FakeGeminiLive, the google-genai SDK): PCM
    16 kHz up and 24 kHz down, converted once each way by the RTP transport."""
    from voxtra.providers.gemini_live import GeminiLiveEngine
    from voxtra.testing.fakes.gemini_live import FakeGeminiLive

    question = await synthesize_wav("what are your opening hours", tmp_path / "q.wav")
    interrupt = await synthesize_wav("wait a moment please", tmp_path / "i.wav")
    service = FakeGeminiLive(
        "k",
        transcripts=["what are your opening hours", "wait a moment please"],
        replies=[RealtimeReply(text=ANSWER), RealtimeReply(text="Sure.")],
        chunk_delay=0.05,
    )
    events: list[PipelineEvent] = []
    engines: list[GeminiLiveEngine] = []
    async with service:
        factory = GeminiLiveEngine.factory(
            "k", base_url=service.base_url, ssl_context=service.client_ssl_context
        )
        app = VoxtraApp(
            ari_url=asterisk.ari_url,
            username=asterisk.username,
            password=asterisk.password,
            app_name=f"voxtra-gl-{uuid.uuid4().hex[:8]}",
            environ={},
            handler_deadline=2.0,
            voice=VoiceConfig(engine=factory),
        )

        async def handler(call: CallSession) -> None:
            assert isinstance(call.engine, GeminiLiveEngine)
            engines.append(call.engine)
            call.engine.on_event(events.append)
            await call.converse()

        await app.start()
        try:
            async with SipCaller(workdir=tmp_path) as phone:
                await phone.listen(record=True)
                await app.originate(
                    f"PJSIP/sipcaller/sip:test@127.0.0.1:{phone.port}",
                    handler=handler,
                    timeout=10,
                )
                call = await phone.next_incoming_call(10)
                await call.wait_answered(10)
                await call.wait_media(10)
                await service.wait_connections(1)
                await asyncio.sleep(0.5)
                await call.play(question)
                await call.wait_play_done(15)
                asked_at = call.event_time("play_started", path=str(question))
                await until(lambda: len(service.connections[0].turns) >= 1)
                await asyncio.sleep(2.5)
                await call.play(interrupt)
                await call.wait_play_done(15)
                interrupted_at = call.event_time("play_started", path=str(interrupt))
                await until(lambda: len([e for e in events if isinstance(e, TurnMetrics)]) == 2)
                await asyncio.sleep(1.0)
                await call.hangup()
                await call.wait_ended(10)
        finally:
            await app.stop()
        (conn,) = service.connections

    finals = [e.text for e in events if isinstance(e, UserTranscriptEvent) and e.is_final]
    assert finals == ["what are your opening hours", "wait a moment please"]
    first, second = [e for e in events if isinstance(e, TurnMetrics)]
    assert first.interrupted and not second.interrupted
    (barge,) = [e for e in events if isinstance(e, BargeInEvent)]
    assert conn.interruptions == 1 and conn.audio_mime_types == {"audio/pcm;rate=16000"}
    history = [(m.role, m.content) for m in engines[0].history]
    assert history[1] == ("assistant", barge.heard_text)  # the answer as heard
    assert call.recording_path is not None and asked_at is not None
    assert interrupted_at is not None
    samples, rate = audio.read_wav(call.recording_path)
    answer_start = audio.onset_after(samples, rate, call.recording_offset(asked_at))
    assert answer_start is not None
    heard = samples[int(answer_start * rate) : int((answer_start + 1.0) * rate)]
    assert abs(audio.dominant_frequency(heard, rate) - 440) < 20
    onset = call.recording_offset(interrupted_at)
    stopped = audio.offset_after(samples, rate, onset, hold_ms=800)
    assert stopped is not None
    stop_ms = (stopped - onset) * 1000
    print(
        f"\ngemini: barge-in: agent audio stopped {stop_ms:.0f} ms after the caller's onset; "
        f"heard {barge.played_ms:.0f} ms by the engine's count, "
        f"{(stopped - answer_start) * 1000:.0f} ms on the phone"
    )
    assert 0 < stop_ms < BARGE_IN_BOUND_S * 1000
    assert barge.played_ms == pytest.approx((stopped - answer_start) * 1000, abs=150)
