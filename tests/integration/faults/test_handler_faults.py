"""Misbehaving call handlers must not damage the other calls' audio.

50 concurrent calls into one app through the sandbox Asterisk. Each caller is a Local
channel (8 kHz ``slin``) whose far end runs ``Echo()``: whatever the app sends comes
back. 49 handlers send a 2.5 s tone, each at its own frequency, and record what comes
back; the 50th handler misbehaves while those tones are in flight:

* ``raises``: an exception escapes the handler (the app hangs that call up);
* ``blocks``: ``time.sleep(0.2)`` inside the async handler, stalling the event loop,
  and with it every call's media, for 200 ms;
* ``hangs``: the handler never returns; its caller hangs up after 2 s, and the call
  must still end (the handler cancelled, the session gone).

What "audio intact" means here. A 200 ms stall of the one event loop delays every
call: no frame can be sent or read while it lasts. That cannot be hidden, so intact
does not mean "on time". It means nothing is lost or damaged on the way out and back:

* every frame of tone the app sent comes back: the echoed tone lasts as long as the
  sent one (within two frames, for onset/offset rounding);
* the echo has the call's own frequency (no cross-talk, no garbling);
* our side lost, dropped or discarded no inbound frame (``stats.lost``,
  ``stats.inbound_dropped``);
* the echo is continuous: no hole (> 20 ms) in the received audio. Received frames
  are concatenated as they come, so a stall shows as delay, not as a hole; a hole
  would be frames that never arrived. After a stall the pacer skips the missed send
  slots instead of bursting them out (``voxtra/media/pacer.py``), so the audio
  queued behind it goes out late, none of it dropped.

Measured (2 cores, shared sandbox): all three faults, 49 of 49 calls intact, longest
hole 0 ms; the same with a 1.5 s stall instead of 200 ms. A call cut short (Asterisk
restarted under the test by another run) failed the tone-length check, as it should.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.media.frames import AudioChunk, Codec
from voxtra.testing import audio
from voxtra.testing.local_caller import place_local_call

pytestmark = [pytest.mark.faults, pytest.mark.asterisk]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
CALLS = 50
HEALTHY = CALLS - 1
TONE_S = 2.5
AMPLITUDE = 0.3
RATE = 8000
FAULT_AT_S = 1.0
"""The fault happens this long after the healthy calls start their tones."""


def freq_of(n: int) -> float:
    """Call ``n``'s tone: 300 to 2220 Hz in 40 Hz steps, all inside the phone band."""
    return 300.0 + 40.0 * n


@dataclass
class Probe:
    """What one healthy call got back."""

    n: int
    received: bytearray
    lost: int = 0
    inbound_dropped: int = 0


@dataclass
class Round:
    """One round: 49 healthy calls and one faulty one, all concurrent."""

    app_name: str
    all_up: asyncio.Event
    up: int = 0

    def ready(self) -> None:
        self.up += 1
        if self.up == CALLS:
            self.all_up.set()


def echo_intact(probe: Probe) -> dict[str, Any]:
    """Measure one call's echo; assert it is intact (see the module docstring)."""
    samples = np.frombuffer(bytes(probe.received), dtype="<i2")
    segments = audio.active_segments(samples, RATE, min_gap_ms=400)
    assert len(segments) == 1, (probe.n, segments)
    start, end = segments[0]
    body = samples[round(start * RATE) : round(end * RATE)]
    # Tone present, frame by frame: a lost or dropped frame shortens it by 20 ms.
    frames = body[: len(body) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.sqrt(np.mean(frames**2, axis=1)) > 32767 * AMPLITUDE * 0.5 / np.sqrt(2)
    tone_s = float(loud.sum()) * 0.02
    gap = audio.longest_gap(samples, RATE, within=(start, end))
    freq = audio.dominant_frequency(body, RATE)
    assert probe.lost == 0 and probe.inbound_dropped == 0, probe
    assert tone_s == pytest.approx(TONE_S, abs=0.04), (probe.n, tone_s)
    assert freq == pytest.approx(freq_of(probe.n), rel=0.02), (probe.n, freq)
    assert gap <= 0.02, (probe.n, gap)
    return {"tone_s": tone_s, "gap_s": gap}


@pytest.mark.parametrize("fault", ["raises", "blocks", "hangs"])
async def test_a_faulty_handler_leaves_the_other_49_calls_audio_intact(
    make_app: MakeApp, fault: str
) -> None:
    r = Round(f"voxtra-hf-{uuid.uuid4().hex[:8]}", asyncio.Event())
    probes: dict[int, Probe] = {}
    seen: dict[str, Any] = {}

    async def healthy(call: CallSession) -> None:
        n = int(call.called_number) - 7000
        await call.answer()
        media = await call.media()
        probe = probes[n] = Probe(n, bytearray())
        stream = call.audio_stream(codec="pcm16", sample_rate=RATE)

        async def record() -> None:
            async for chunk in stream:
                probe.received += chunk.data

        reader = asyncio.create_task(record())
        r.ready()
        try:
            await asyncio.wait_for(r.all_up.wait(), 20)
            await asyncio.sleep(0.3)  # a little silence before the tone
            pcm = audio.tone(freq_of(n), TONE_S, RATE, AMPLITUDE).tobytes()
            await call.send_audio(AudioChunk(pcm, RATE, Codec.PCM16))
            while media.queued_ms > 0:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.8)  # the echo's tail comes back (and a stall's delay)
        finally:
            reader.cancel()
            probe.lost = media.stats.lost
            probe.inbound_dropped = media.stats.inbound_dropped

    async def faulty(call: CallSession) -> None:
        await call.answer()
        await call.media()
        r.ready()
        await r.all_up.wait()
        await asyncio.sleep(0.3 + FAULT_AT_S)  # into the other calls' tones
        if fault == "raises":
            seen["raised"] = True
            raise RuntimeError("handler bug")
        if fault == "blocks":
            t = time.monotonic()
            time.sleep(0.2)  # noqa: ASYNC251 - the fault under test: blocks the loop
            seen["blocked_s"] = time.monotonic() - t
            await asyncio.sleep(TONE_S)
            return
        try:
            await asyncio.Event().wait()  # never returns
        except BaseException as exc:
            seen["hang_exit"] = type(exc).__name__
            raise

    def configure(app: VoxtraApp) -> None:
        app.route(extension="_7XXX")(healthy)
        app.route(extension="6000")(faulty)

    app = await make_app(
        configure, app_name=r.app_name, media={"transport": "rtp", "codec": "slin"}
    )
    variables = {"VOXTRA_APP": r.app_name}
    started = time.monotonic()
    # The faulty call's caller: echoes like the others; for "hangs" it hangs up on its
    # own mid-tone (Wait(2) after answering), which must end the call.
    if fault == "hangs":
        faulty_call = place_local_call(
            app.ari, "6000", behaviour="hangup-after", variables={**variables, "WAIT": "2"}
        )
    else:
        faulty_call = place_local_call(app.ari, "6000", behaviour="echo", variables=variables)
    calls = await asyncio.gather(
        faulty_call,
        *(
            place_local_call(app.ari, str(7000 + n), behaviour="echo", variables=variables)
            for n in range(HEALTHY)
        ),
    )
    await asyncio.wait_for(r.all_up.wait(), 20)
    set_up = time.monotonic() - started
    deadline = time.monotonic() + 15
    while len(probes) < HEALTHY or any(
        s.called_number.startswith("7") for s in app.active_sessions.values()
    ):
        assert time.monotonic() < deadline, "the healthy calls did not finish"
        await asyncio.sleep(0.1)

    stall = seen.get("blocked_s", 0.0)
    figures = [echo_intact(probes[n]) for n in range(HEALTHY)]
    gaps = sorted(f["gap_s"] for f in figures)
    print(
        f"\n{fault}: {HEALTHY} calls intact (set up in {set_up:.1f} s); "
        f"longest echo gap p50 {gaps[len(gaps) // 2] * 1000:.0f} ms, "
        f"max {gaps[-1] * 1000:.0f} ms; stall {stall * 1000:.0f} ms"
    )
    if fault == "blocks":
        assert stall >= 0.2
    if fault == "raises":
        assert seen.get("raised")
    if fault == "hangs":
        # The caller hung up: the never-returning handler was cancelled, the call ended.
        deadline = time.monotonic() + 10
        while any(s.called_number == "6000" for s in app.active_sessions.values()):
            assert time.monotonic() < deadline, "the hung handler's call did not end"
            await asyncio.sleep(0.1)
        assert seen.get("hang_exit") in ("CancelledError", "CallEnded")
    for call in calls:
        await call.hangup()
