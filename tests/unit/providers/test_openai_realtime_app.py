"""OpenAIRealtimeEngine plugged into a whole VoxtraApp (FakeAsterisk, its RTP media) with
``VoiceConfig(engine=OpenAIRealtimeEngine.factory(...))``: the handler code is the
pipeline's (say, listen, converse); the service is FakeOpenAIRealtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.pipeline.pipeline import EndReason
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.openai_realtime import FakeOpenAIRealtime, RealtimeReply

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TONE = b"\x80\x00" * 4000  # 1 s of a loud u-law tone: the caller speaks


def heard_ms(ulaw: bytes) -> float:
    """Milliseconds of sound (not u-law silence, 0xFF) in what the phone heard."""
    return (len(ulaw) - ulaw.count(0xFF)) / 8


def make_app(tmp_path: Path, voice: VoiceConfig) -> VoxtraApp:
    return VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="realtime-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        voice=voice,
    )


async def test_say_and_listen_run_on_the_engine(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    async with FakeOpenAIRealtime("k", transcripts=["what time is it"]) as service:
        voice = VoiceConfig(
            system_prompt="You are a clock.",
            engine=OpenAIRealtimeEngine.factory("k", base_url=service.base_url, voice="cedar"),
        )
        app = make_app(tmp_path, voice)
        seen: dict[str, Any] = {}

        @app.route("6000")
        async def agent(call: CallSession) -> None:
            await call.answer()
            seen["engine"] = call.engine
            seen["pipeline"] = call.pipeline
            seen["agent"] = call.agent
            await call.say("Hello, ask me something.")
            turn = await call.listen(timeout=10)
            seen["heard"] = turn.text if turn else None
            await call.say("It is noon.")
            assert call.agent is not None
            seen["history"] = [(m.role, m.content) for m in call.agent.history]
            await call.hangup()

        async with fake_asterisk.serve(app):
            call = await fake_asterisk.incoming(extension="6000")
            # the caller answers once the greeting (4 words, 1.2 s of u-law) has played
            await call.wait_until(lambda c: heard_ms(c.audio_heard) >= 1150, timeout=10)
            call.send_audio(TONE)
            await call.wait_ended(timeout=20)
        (conn,) = service.connections

    assert isinstance(seen["engine"], OpenAIRealtimeEngine) and seen["pipeline"] is None
    # call.agent: the engine's history (as heard) and tools, as with the pipeline
    assert seen["agent"] is seen["engine"].agent
    assert seen["history"] == [
        ("system", "You are a clock."),
        ("assistant", "Hello, ask me something."),
        ("user", "what time is it"),
        ("assistant", "It is noon."),
    ]
    assert seen["heard"] == "what time is it"
    session = conn.of("session.update")[0]["session"]
    assert session["instructions"] == "You are a clock."
    assert session["audio"]["output"]["voice"] == "cedar"
    says = [e["response"]["instructions"].splitlines()[-1] for e in conn.of("response.create")]
    assert says == ["Hello, ask me something.", "It is noon."]
    # the RTP call's u-law went up as it came: whole 20 ms frames, no decoding
    assert conn.input_format == "audio/pcmu" and conn.audio_bytes % 160 == 0
    # and the answers came down to the phone: 4 + 3 words at 300 ms each
    assert len(call.audio_heard) >= 0.9 * 8 * 2100


async def test_converse_hands_the_call_to_the_model(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    def opening_hours(day: str) -> str:
        """When the shop is open on a day."""
        return f"{day}: nine to five"

    service = FakeOpenAIRealtime(
        "k",
        transcripts=["are you open on monday"],
        replies=[
            RealtimeReply(tool_calls=[("opening_hours", {"day": "monday"})]),
            RealtimeReply(text="Yes, from nine to five."),
        ],
    )
    async with service:
        voice = VoiceConfig(
            greeting="Good morning.",
            tools=(opening_hours,),
            engine=OpenAIRealtimeEngine.factory("k", base_url=service.base_url),
        )
        app = make_app(tmp_path, voice)
        ended: list[EndReason] = []

        @app.route("6000")
        async def agent(call: CallSession) -> None:
            await call.answer()
            ended.append(await call.converse())

        async with fake_asterisk.serve(app):
            call = await fake_asterisk.incoming(extension="6000")
            await call.wait_until(lambda c: any(b != 0xFF for b in c.audio_heard), timeout=10)
            call.send_audio(TONE)
            await service.wait_connections(1)
            conn = service.connections[0]
            await call.wait_until(lambda c: ("assistant", "Yes, from nine to five.") in
                                  conn.history(), timeout=10)  # fmt: skip
            await call.hang_up()
            await call.wait_ended(timeout=10)

    assert ended == [EndReason.HANGUP]
    assert [k for k, _ in conn.history()] == [
        "assistant",
        "user",
        "function_call",
        "function_call_output",
        "assistant",
    ]
    assert conn.history()[3] == ("function_call_output", "monday: nine to five")
    assert conn.input_format == conn.output_format == "audio/pcmu"
