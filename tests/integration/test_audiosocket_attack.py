"""A live AudioSocket call through the real Asterisk while a stranger attacks the port.

A SIP caller (pjsua2) talks to an echo app on AudioSocket media. From another process
(as a remote attacker is) a stranger keeps connecting to the app's AudioSocket
listener, ~550 times a second: made-up UUIDs followed by 64 KB messages of unknown kinds,
connections that never greet, and half a UUID. The call's echo must stay intact and
every foreign connection be refused and counted.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.testing import audio
from voxtra.testing.faults import StallMeter
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
AMPLITUDE = 0.4


# Another process, as a remote attacker is (a thread here would share the app's GIL).
STRANGER = r"""
import contextlib, socket, sys, time, uuid
from voxtra.media.audiosocket import build_message, build_uuid

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
junk = build_message(0x42, bytes(65535))  # a kind chan_audiosocket never sends
unknown = half = 0
idle = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(10):  # made-up UUIDs, then junk
        try:
            sock = socket.create_connection((host, port), timeout=1)
        except OSError:
            continue
        with contextlib.suppress(OSError):
            sock.sendall(build_uuid(uuid.uuid4()) + junk)
        unknown += 1
        sock.close()
    if len(idle) < 100:  # connections that never greet: the cap and the timeout
        with contextlib.suppress(OSError):
            idle.append(socket.create_connection((host, port), timeout=1))
    with contextlib.suppress(OSError):  # half a UUID, then nothing
        sock = socket.create_connection((host, port), timeout=1)
        sock.sendall(build_uuid(uuid.uuid4())[:9])
        idle.append(sock)
        half += 1
    time.sleep(0.02)
print(unknown, len(idle), half)
"""


async def test_echo_stays_intact_while_a_stranger_attacks_the_audiosocket_port(
    make_app: MakeApp, tmp_path: Path
) -> None:
    attached = asyncio.Event()

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="5000")
        async def echo(call: CallSession) -> None:
            await call.answer()
            stream = call.audio_stream(codec="pcm16", sample_rate=8000)
            attached.set()
            async for chunk in stream:
                await call.send_audio(chunk)

    app = await make_app(configure, media={"transport": "audiosocket", "codec": "slin"})
    sent = audio.write_wav(tmp_path / "sent.wav", audio.tone(440, 2.0, 8000, AMPLITUDE), 8000)
    heard = tmp_path / "heard.wav"
    stranger: asyncio.subprocess.Process | None = None
    meter = StallMeter()
    try:
        async with SipCaller(codecs=("PCMU",), workdir=tmp_path / "phone") as phone:
            call = await phone.dial("5000", record=heard)
            await call.wait_answered(10)
            await asyncio.wait_for(attached.wait(), 10)
            server: Any = await app.audiosocket_server()
            host, port = server.advertised_address.rsplit(":", 1)
            stranger = await asyncio.create_subprocess_exec(
                sys.executable, "-c", STRANGER, host, port, "4", stdout=asyncio.subprocess.PIPE
            )
            # As VoxtraApp.run() does once started: without it, the flood's garbage made
            # Python collect this test process's whole heap (pytest and all): one full
            # collection took 43 ms, a 50 ms hole in the echo. The app's own cost is
            # ~140 us per refused connection (~7% of a core at 550 a second).
            gc.freeze()
            meter.start()
            await asyncio.sleep(0.6)  # media flowing, the attack under way
            await call.play(sent)
            await call.wait_play_done(10)
            await asyncio.sleep(0.5)  # the tail of the echo comes back
            await call.hangup()
            await call.wait_ended(10)
    finally:
        gc.unfreeze()
        await meter.stop()
        out = b""
        if stranger is not None:
            out, _ = await asyncio.wait_for(stranger.communicate(), 10)
    unknown, idle, half = (int(n) for n in out.split())
    stats = server.stats
    samples, rate = audio.read_wav(heard)
    segments = audio.active_segments(samples, rate)
    assert len(segments) == 1, (
        f"expected one stretch of echo, got {segments}; stall {meter.max_ms:.1f} ms; {stats}"
    )
    start, end = segments[0]
    assert end - start == pytest.approx(2.0, abs=0.06)
    body = samples[round((start + 0.05) * rate) : round((end - 0.05) * rate)]
    assert audio.dominant_frequency(body, rate) == pytest.approx(440, rel=0.02)
    assert audio.longest_gap(samples, rate, within=(start, end)) <= 0.060, stats
    # The attack happened, and nothing of it was taken.
    assert unknown >= 50 and idle > 64 and half > 0, (unknown, idle, half)
    assert stats.accepted == 1 and stats.refused_duplicate == 0
    assert stats.refused_unknown_uuid >= 50
    assert stats.refused_over_limit >= 1
    assert stats.unknown_messages == 0  # only the call's own connection is ever read
    # 40 ms: under the 43 ms a full collection of the heap took (above), over what the
    # box's scheduling adds when loaded (a CI run with other work on both cores measured
    # 20.05 ms against an earlier bound of 20, the echo intact).
    assert meter.max_ms < 40, f"event loop stalled {meter.max_ms:.1f} ms"
