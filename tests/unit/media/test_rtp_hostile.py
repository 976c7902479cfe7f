"""The RTP inbound path against a stranger (issue 16, media plane): real sockets.

Everything here failed on the code before the fix: jump packets made thousands of
frames and a quadratic conversion, the first sender became the peer, any source was
delivered, and any payload type and size came through as a "frame".
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from voxtra.media import resample
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voxtra.media.jitter import MAX_CONCEAL
from voxtra.media.pacer import Ticker
from voxtra.media.rtp import RtpPacket
from voxtra.media.rtp_transport import RtpTransport
from voxtra.providers.webrtc_vad import WebRtcVAD


class Sender:
    """A plain UDP socket on 127.0.0.1 that sends RTP (the peer, or a stranger)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.addr: tuple[str, int] = self.sock.getsockname()

    def send(self, port: int, seq: int, payload: bytes = b"\x55" * 160, pt: int = 0) -> None:
        data = RtpPacket(pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 7, payload).build()
        self.sock.sendto(data, ("127.0.0.1", port))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peer() -> AsyncIterator[Sender]:
    s = Sender()
    yield s  # type: ignore[misc]
    s.close()


@pytest.fixture
def stranger() -> AsyncIterator[Sender]:
    s = Sender()
    yield s  # type: ignore[misc]
    s.close()


async def take(tr: RtpTransport, n: int, timeout: float = 1.0) -> list[AudioChunk]:
    it = tr.frames()
    return [await asyncio.wait_for(anext(it), timeout) for _ in range(n)]


async def settle(tr: RtpTransport) -> None:
    """A few ticks: whatever was sent has been drained and delivered."""
    await asyncio.sleep(0.1)


async def test_jump_packets_through_a_converting_reader_cost_bounded_work(
    peer: Sender,
) -> None:
    """64 packets each 250 ahead (the issue's attack) from the peer's own address.

    Before: ~249 lost frames each (16,001 frames), converted in one round per frame
    with a rescan of the pending list per round: 13 s with the event loop stalled.
    """
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", remote=peer.addr)
    tr.set_inbound_format(Codec.PCM16, 16000)
    port = tr.local_address[1]
    try:
        peer.send(port, 1000)
        await take(tr, 1)
        seq = 1000
        begun = time.perf_counter()
        for _ in range(64):
            seq += 250
            peer.send(port, seq)
        await settle(tr)
        elapsed = time.perf_counter() - begun
        # and the stream itself goes on
        for s in range(1001, 1006):
            peer.send(port, s)
        await settle(tr)
    finally:
        await tr.close()
    st = tr.stats
    assert st.frames_in <= 1 + 5 + 64 * (MAX_CONCEAL + 1)
    assert st.dropped_stray >= 60 and st.resyncs == 0
    assert elapsed < 1.0  # backstop only (was 13 s); the bound is the frame count above


def _bare(fmt: str = "ulaw") -> RtpTransport:
    """A transport fed by hand (``_datagram``), converting to PCM16 at 16 kHz."""
    tr = RtpTransport(fmt, remote=("127.0.0.1", 9), ticker=Ticker())
    tr.set_inbound_format(Codec.PCM16, 16000)
    return tr


def _packet(seq: int) -> bytes:
    return RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 7, b"\x55" * 160).build()


def test_gaps_within_dropout_emit_at_most_max_conceal_each() -> None:
    """Bursts of 4 packets with 60 lost between them, one burst per tick: loss, but
    200 ms of silence shown per gap (before: 60 frames each)."""
    tr = _bare()
    for burst in range(20):
        tr._tick_concealed = 0  # a new tick (what _drain does)
        for k in range(4):
            tr._datagram(_packet(burst * 64 + k))
        tr._batch.after_tick()
    st = tr.stats
    assert st.lost == 19 * 60  # every missing packet is counted
    assert st.concealed == 19 * MAX_CONCEAL
    assert st.frames_in == 80 + 19 * MAX_CONCEAL


def test_concealment_per_tick_is_capped() -> None:
    """64 packets in one tick, bursts of 4 after gaps of 60: the most the jitter buffer
    lets a stream emit per packet. Before the per-tick cap: 224 frames in one tick
    (and 16 x 59 = 944 on the code before the jitter-buffer bound)."""
    tr = _bare()
    tr._tick_concealed = 0
    for i in range(64):
        tr._datagram(_packet((i // 4) * 64 + i % 4))
    tr._batch.after_tick()
    assert tr.stats.frames_in <= 64 + 20
    assert tr.stats.concealed == 20


def test_a_late_tick_still_converts_every_call_in_one_batch_per_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three frames each for many calls (the ticker fell behind): batched rounds.

    Before, every call with more than one frame was resampled alone (500 calls: 12 ms
    more in a tick that was already late).
    """
    calls = {"process": 0}
    real_process = resample.StreamResampler.process

    def process(self: resample.StreamResampler, pcm: bytes) -> bytes:
        calls["process"] += 1
        return real_process(self, pcm)

    monkeypatch.setattr(resample.StreamResampler, "process", process)
    t = np.arange(160 * 3)
    wire = pcm16_to_ulaw((6000 * np.sin(2 * np.pi * 440 * t / 8000)).astype("<i2").tobytes())
    ticker = Ticker()
    trs = [RtpTransport("ulaw", remote=("127.0.0.1", 9), ticker=ticker) for _ in range(20)]
    for tr in trs:
        tr.set_inbound_format(Codec.PCM16, 16000)
        for i in range(3):
            tr._deliver_payload(wire[i * 160 : (i + 1) * 160])
    trs[0]._batch.after_tick()
    assert calls["process"] == 0
    monkeypatch.setattr(resample.StreamResampler, "process", real_process)
    want = np.frombuffer(resample.StreamResampler(8000, 16000).process(ulaw_to_pcm16(wire)), "<i2")
    for tr in trs:
        assert [len(c.data) for c in tr._in] == [640, 640, 640]
        have = np.frombuffer(b"".join(c.data for c in tr._in), "<i2")
        assert np.max(np.abs(have.astype(int) - want.astype(int))) <= 1


def test_a_burst_for_one_stream_is_converted_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tick's batch is linear: a stream's many frames are not one round each.

    Before, 2,001 frames of one stream were 2,001 ``resample_many`` rounds, each
    rescanning the pending list (142 ms on this box for 8 jump packets).
    """
    from voxtra.media import rtp_transport

    calls = {"many": 0, "process": 0}
    real_many, real_process = rtp_transport.resample_many, resample.StreamResampler.process

    def many(*args: object) -> list[bytes]:
        calls["many"] += 1
        return real_many(*args)  # type: ignore[arg-type]

    def process(self: resample.StreamResampler, pcm: bytes) -> bytes:
        calls["process"] += 1
        return real_process(self, pcm)

    monkeypatch.setattr(rtp_transport, "resample_many", many)
    monkeypatch.setattr(resample.StreamResampler, "process", process)

    t = np.arange(160 * 300)
    pcm = (6000 * np.sin(2 * np.pi * 440 * t / 8000)).astype("<i2").tobytes()
    wire = pcm16_to_ulaw(pcm)
    frames = [wire[i : i + 160] for i in range(0, len(wire), 160)]
    ticker = Ticker()  # one batch for both calls
    tr = RtpTransport("ulaw", remote=("127.0.0.1", 9), ticker=ticker)
    other = RtpTransport("ulaw", remote=("127.0.0.1", 9), ticker=ticker)
    tr.set_inbound_format(Codec.PCM16, 16000)
    other.set_inbound_format(Codec.PCM16, 16000)
    for i, f in enumerate(frames):
        tr._deliver_payload(f)
        if i < 2:
            other._deliver_payload(f)
    tr._batch.after_tick()
    assert calls["many"] + calls["process"] <= 4
    got = list(tr._in)
    assert len(got) == 300 and all(len(c.data) == 640 for c in got)
    assert len(other._in) == 2
    # the same audio a lone converter makes of the whole stream (to 1 LSB)
    want = np.frombuffer(resample.StreamResampler(8000, 16000).process(ulaw_to_pcm16(wire)), "<i2")
    have = np.frombuffer(b"".join(c.data for c in got), "<i2")
    assert len(have) == len(want)
    assert np.max(np.abs(have.astype(int) - want.astype(int))) <= 1


async def test_after_set_remote_other_sources_are_dropped(peer: Sender, stranger: Sender) -> None:
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", remote=peer.addr)
    port = tr.local_address[1]
    try:
        for s in range(20):
            peer.send(port, 100 + s, bytes([s + 1]) * 160)
            # the stranger's packets are valid RTP, even in sequence with the peer's
            stranger.send(port, 100 + s, b"\x00" * 160)
            stranger.send(port, 5000 + s, b"\x00" * 160)
        got = await take(tr, 20)
        await settle(tr)
    finally:
        await tr.close()
    assert [c.data[0] for c in got] == list(range(1, 21))
    st = tr.stats
    assert st.dropped_foreign_source == 40
    assert st.frames_in == 20 and st.resyncs == 0 and st.lost == 0


async def test_before_set_remote_nobody_becomes_the_peer(peer: Sender, stranger: Sender) -> None:
    """Nothing is read until Asterisk's address is known; then only its packets count.

    Before: the stranger's first packet made it the remote (our audio went to it).
    """
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1")
    port = tr.local_address[1]
    try:
        stranger.send(port, 1, b"\x00" * 160)
        await settle(tr)
        assert tr.remote is None and tr.stats.frames_in == 0
        tr.set_remote(*peer.addr)
        peer.send(port, 50, b"\x11" * 160)
        (frame,) = await take(tr, 1)
        assert frame.data == b"\x11" * 160
        assert tr.remote == peer.addr
        assert tr.stats.dropped_foreign_source == 1  # held meanwhile, then dropped
    finally:
        await tr.close()


async def test_dual_stack_socket_latches_to_an_ipv4_peer(peer: Sender) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        tr = await RtpTransport.open("ulaw", bind_host="::", remote=peer.addr)
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"cannot bind [::]: {exc}")
    try:
        peer.send(tr.local_address[1], 1, b"\x22" * 160)
        (frame,) = await take(tr, 1)
    finally:
        await tr.close()
    assert frame.data == b"\x22" * 160 and tr.stats.dropped_foreign_source == 0


@pytest.mark.parametrize(
    ("pt", "payload", "kind"),
    [
        (101, b"\x01" * 2000, "dropped_payload_type"),  # the 2,000-byte "frame"
        (101, b"\x01\x0a\x00\xa0", "dropped_payload_type"),  # an RFC 4733 event
        (8, b"\x55" * 160, "dropped_payload_type"),  # A-law on a u-law stream
        (0, b"\x55" * 2000, "dropped_size"),
        (0, b"\x55" * 161, "dropped_size"),
        (0, b"\x55" * 80, "dropped_size"),
        (0, b"", "dropped_size"),
    ],
)
async def test_wrong_payload_type_or_size_is_dropped_and_counted(
    peer: Sender, pt: int, payload: bytes, kind: str
) -> None:
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", remote=peer.addr)
    port = tr.local_address[1]
    try:
        peer.send(port, 10, b"\x01" * 160)
        peer.send(port, 11, payload, pt=pt)
        peer.send(port, 12, b"\x03" * 160)
        peer.send(port, 13, b"\x04" * 160)
        peer.send(port, 14, b"\x05" * 160)
        peer.send(port, 15, b"\x06" * 160)
        got = await take(tr, 6)
    finally:
        await tr.close()
    # the dropped packet's slot becomes one frame of silence, like any lost packet
    assert [c.data[0] for c in got] == [1, 0xFF, 3, 4, 5, 6]
    assert all(len(c.data) == 160 for c in got)
    assert getattr(tr.stats, kind) == 1


@pytest.mark.parametrize(
    ("fmt", "pts", "size"), [("slin", (10, 11), 320), ("slin16", (118, 96), 640)]
)
async def test_slin_payload_types_accepted(
    peer: Sender, fmt: str, pts: tuple[int, ...], size: int
) -> None:
    tr = await RtpTransport.open(fmt, bind_host="127.0.0.1", remote=peer.addr, payload_type=96)
    port = tr.local_address[1]
    try:
        for i, pt in enumerate(pts):
            peer.send(port, i, b"\x00\x01" * (size // 2), pt=pt)
        peer.send(port, 5, b"\x00\x01" * (size // 2), pt=0)
        got = await take(tr, len(pts))
        await settle(tr)
    finally:
        await tr.close()
    assert all(len(c.data) == size for c in got)
    assert tr.stats.dropped_payload_type == 1


def test_webrtc_vad_never_raises_on_odd_sizes() -> None:
    """An odd frame used to raise, and the pipeline then dropped VAD for the whole call."""
    session = WebRtcVAD().session()
    for data in (b"", b"\xff", b"\xff" * 161, b"\xff" * 2000, b"\xff" * 79):
        assert session.is_speech(AudioChunk(data)) is False
    odd16 = AudioChunk(b"\x00" * 642, 16000, Codec.PCM16)  # 321 samples
    assert session.is_speech(odd16) is False
    assert session.odd_frames == 5  # 2,000 bytes is 25 whole 10 ms pieces: not odd
    assert session.is_speech(AudioChunk(b"\xff" * 160)) is False  # and it still works
    assert session.odd_frames == 5


def test_resampler_matrix_cache_stays_small() -> None:
    """Frames of ever new lengths used to add a matrix each: 64 x 32 MB = 2 GB."""
    resample._TOEPLITZ.clear()
    streams = [resample.StreamResampler(8000, 16000) for _ in range(2)]
    for n in range(100, 4100, 100):
        frame = np.zeros(n, "<i2").tobytes()
        resample.resample_many(streams, [frame, frame])
    sizes = [t.size for t, _ in resample._TOEPLITZ.values()]
    assert len(sizes) <= 8
    assert sum(sizes) * 4 <= 32 * 2**20
    # live 20 ms frames still get their matrix
    resample.resample_many(streams, [bytes(320), bytes(320)])
    assert any(k[3] == 160 for k in resample._TOEPLITZ)
