"""The voice pipeline hears a caller on an Asterisk Local channel (no SIP client).

``place_local_call(..., behaviour="play")`` dials ``Local/app-X@voxtra-test``: its far
half answers and plays a prompt (``demo-congrats``, 30 s of speech), which reaches the
app's ExternalMedia through a bridge with the Local channel's ``;2`` half. A helper saw
such a call reach the handler while the pipeline heard nothing and the transport logged
"dropping an RTP payload of 112 bytes". Measured on Asterisk 22.10.1 (2026-11-30,
app media ulaw and slin, Local formats slin, ulaw and slin16, behaviours play and echo):
every payload was one 20 ms frame (ulaw 160 bytes, slin 320), 68-800 packets a call,
and the pipeline's VAD heard the prompt at once (SpeechStartedEvent 0.36 s in). The one
other size seen: the *last* packet of a file played to a ulaw ExternalMedia,
the file's tail shorter than 20 ms (a 16,112-sample WAV ended on a 90-byte packet);
to a slin ExternalMedia the same file sent only whole 320-byte frames (the tail never
came). That short last packet is all the size check drops, so it is not why a
pipeline would hear nothing. (The default prompt, demo-congrats, is 30 s of speech
whose longest pause is 0.52 s: a pipeline ends no turn, and gives no transcript,
before it ends; only SpeechStartedEvent shows it was heard.) This test keeps the path
honest: the VAD hears the prompt and no payload of a playing prompt is dropped for its
size.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.media.engine_transport import EngineTransport
from voxtra.media.rtp_transport import RtpTransport
from voxtra.pipeline import PipelineEvent, SpeechStartedEvent, VoicePipeline
from voxtra.providers.webrtc_vad import WebRtcVAD
from voxtra.testing.local_caller import place_local_call

pytestmark = [pytest.mark.asterisk]

MakeApp = Callable[..., Awaitable[VoxtraApp]]


@pytest.mark.parametrize(
    ("codec", "formats", "engine"),
    [
        ("ulaw", "slin", False),
        ("slin", "slin", False),
        ("ulaw", "ulaw", False),
        ("ulaw", "slin", True),
        ("slin", "slin", True),  # the engine is G.711: slin stays per call
    ],
)
async def test_pipeline_hears_a_local_play_caller(
    make_app: MakeApp, codec: str, formats: str, engine: bool
) -> None:
    app_name = f"voxtra-local-{uuid.uuid4().hex[:8]}"
    events: list[PipelineEvent] = []
    heard = asyncio.Event()
    stats: dict[str, int] = {}

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="4100")
        async def listen(call: CallSession) -> None:
            await call.answer()
            transport = await call.media()
            pipeline = VoicePipeline(vad=WebRtcVAD())

            def record(event: PipelineEvent) -> None:
                events.append(event)
                if isinstance(event, SpeechStartedEvent):
                    heard.set()

            pipeline.on_event(record)
            try:
                async with pipeline.attach(transport, call_id=call.id):
                    await asyncio.wait_for(heard.wait(), 10)
            finally:
                want = EngineTransport if engine and codec != "slin" else RtpTransport
                assert isinstance(transport, want)
                stats["frames"] = transport.stats.frames_in
                stats["dropped_size"] = transport.stats.dropped_size

    media = {"transport": "rtp", "codec": codec, "engine": engine}
    app = await make_app(configure, app_name=app_name, media=media)
    call = await place_local_call(
        app.ari, "4100", behaviour="play", variables={"VOXTRA_APP": app_name}, formats=formats
    )
    try:
        await asyncio.wait_for(heard.wait(), 15)
    finally:
        await call.hangup()
    for _ in range(50):
        if stats:
            break
        await asyncio.sleep(0.1)
    assert any(isinstance(e, SpeechStartedEvent) for e in events), events
    assert stats.get("frames", 0) > 0 and stats.get("dropped_size") == 0, stats
