"""MediaEngine against the real Asterisk: three calls' RTP on one socket, as arrays.

Each call is a Local channel whose far half runs Echo(); the app bridges it with an
ExternalMedia channel pointed at one ``MediaEngine``, and the engine's ``on_tick``
plays each call its own tone (400, 800, 1,600 Hz). What comes back through Asterisk
is each call's own tone: Asterisk took our RTP (headers built as arrays, one
``sendmmsg``), and the datagrams, from Asterisk's port per channel, reached the right
rows (demultiplexed by source with array operations). About 2 s of audio.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt
import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.media.engine import EngineStream, MediaEngine, TickAudio
from voxtra.testing.local_caller import place_local_call

pytestmark = [pytest.mark.asterisk]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
TONES = (400.0, 800.0, 1600.0)


def dominant_hz(x: npt.NDArray[np.float64], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


async def test_three_echo_calls_each_hear_their_own_tone_through_the_engine(
    make_app: MakeApp,
) -> None:
    app_name = f"voxtra-engine-{uuid.uuid4().hex[:8]}"
    engine = MediaEngine(bind_host="127.0.0.1", sample_rate=16000, capacity=8)
    tone_of: dict[int, float] = {}
    phase: dict[int, int] = {}
    heard: dict[int, list[npt.NDArray[np.int16]]] = {}
    done = asyncio.Event()

    def on_tick(audio: TickAudio) -> npt.NDArray[np.int16]:
        out = np.zeros_like(audio.pcm)
        for row, sid in enumerate(audio.ids.tolist()):
            if sid not in tone_of:
                continue
            n0 = phase.get(sid, 0)
            t = (n0 + np.arange(audio.pcm.shape[1])) / 16000
            out[row] = (6000 * np.sin(2 * np.pi * tone_of[sid] * t)).astype(np.int16)
            phase[sid] = n0 + audio.pcm.shape[1]
            if audio.present[row]:
                heard.setdefault(sid, []).append(audio.pcm[row].copy())
        if len(heard) == len(TONES) and all(len(v) >= 100 for v in heard.values()):
            done.set()
        return out

    engine.on_tick = on_tick
    streams: list[EngineStream] = []

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handler(call: CallSession) -> None:
            await call.answer()
            ctx = call.context
            bridge = await ctx.create_bridge("media")
            await app.ari.bridges.add_channel(bridge, call.id)
            media_id = app.internal_id("media")
            started = ctx.expect_channel(media_id)
            stream = engine.add("ulaw", name=call.id)
            channel = await app.ari.channels.external_media(
                app.app_name,
                external_host=engine.advertised_address,
                format="ulaw",
                channel_id=media_id,
            )
            await started
            variables = channel.channelvars or {}
            stream.set_remote(
                variables["UNICASTRTP_LOCAL_ADDRESS"], int(variables["UNICASTRTP_LOCAL_PORT"])
            )
            tone_of[stream.id] = TONES[int(call.called_number) - 4200]
            streams.append(stream)
            await app.ari.bridges.add_channel(bridge, media_id)
            await done.wait()

    engine.start()
    app = await make_app(configure, app_name=app_name)
    calls = [
        await place_local_call(
            app.ari, str(4200 + k), behaviour="echo", variables={"VOXTRA_APP": app_name}
        )
        for k in range(len(TONES))
    ]
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        for c in calls:
            await c.hangup()
        await engine.aclose()
    assert engine.stats.dropped_foreign_source == 0
    for stream in streams:
        got = np.concatenate(heard[stream.id][-50:]).astype(np.float64)  # the last second
        assert abs(dominant_hz(got, 16000) - tone_of[stream.id]) < 20, stream.name
        assert stream.frames_in >= 100
