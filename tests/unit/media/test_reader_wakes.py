"""A tick's readers are woken a slice per loop pass, and its packets leave before it reads.

Real RTP transports on one shared loopback socket, a real ticker; the loop is observed
through what runs between the readers, not through timing.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.pacer import Pacer, Ticker
from voxtra.media.rtp import RtpSender
from voxtra.media.rtp_endpoint import RtpEndpoint
from voxtra.media.rtp_transport import RtpTransport
from voxtra.media.wakes import ReaderWakes, reader_wakes

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_readers_are_woken_a_slice_per_pass_with_other_callbacks_between() -> None:
    loop = asyncio.get_running_loop()
    wakes = ReaderWakes(loop, slice_size=4)
    order: list[str] = []
    futs = [loop.create_future() for _ in range(10)]
    for i, fut in enumerate(futs):
        fut.add_done_callback(lambda _f, i=i: order.append(f"r{i}"))
    wakes.wake(futs)
    loop.call_soon(order.append, "other")  # e.g. a socket's reply that came meanwhile
    while len(order) < 11:
        await asyncio.sleep(0)
    assert order.index("other") < order.index("r4")  # between the first slices, not after all
    assert [x for x in order if x != "other"] == [f"r{i}" for i in range(10)]  # in order
    assert wakes.passes == 3 and len(wakes) == 0


async def test_a_cancelled_waiter_is_skipped_and_one_wake_is_scheduled_at_a_time() -> None:
    loop = asyncio.get_running_loop()
    wakes = ReaderWakes(loop, slice_size=2)
    a, b, c = (loop.create_future() for _ in range(3))
    wakes.wake([a, b])
    wakes.wake([c])  # joins the pass already scheduled
    b.cancel()
    for _ in range(3):
        await asyncio.sleep(0)
    assert a.result() is None and b.cancelled() and c.result() is None
    assert wakes.passes == 2  # [a, b] then [c]


async def test_one_wake_queue_per_loop() -> None:
    assert reader_wakes() is reader_wakes(asyncio.get_running_loop())


class _Caller:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.rtp = RtpSender(0)

    def send(self, to: tuple[str, int], payload: bytes) -> None:
        self.sock.sendto(self.rtp.build(payload), to)


async def test_a_ticks_many_readers_let_a_due_timer_run_between_them() -> None:
    """60 calls on one socket: a timer due while the tick hands their frames over runs
    before the last of their readers (woken all at once, it ran after every one)."""
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1")
    transports = [
        await RtpTransport.open("ulaw", endpoint=endpoint, name=f"w{i}") for i in range(60)
    ]
    callers = [_Caller() for _ in transports]
    for tr, caller in zip(transports, callers, strict=True):
        tr.set_remote(*caller.sock.getsockname()[:2])
    events: list[str] = []
    loop = asyncio.get_running_loop()

    async def read(i: int, tr: RtpTransport) -> None:
        async for _chunk in tr.frames():
            events.append(f"r{i}")
            if len(events) == 1:  # the first reader's pass: a timer falls due now
                loop.call_at(loop.time(), events.append, "timer")
            return

    readers = [asyncio.create_task(read(i, tr)) for i, tr in enumerate(transports)]
    await asyncio.sleep(0.05)  # every reader waits in frames()
    wakes = reader_wakes()
    before = wakes.passes
    for tr, caller in zip(transports, callers, strict=True):
        caller.send(tr.local_address, b"\x7f" * 160)
    await asyncio.wait_for(asyncio.gather(*readers), 2.0)
    reads = [e for e in events if e.startswith("r")]
    assert len(reads) == 60
    assert events.index("timer") < len(events) - 1, events  # between the readers
    assert wakes.passes - before >= 60 // wakes.slice_size
    for tr in transports:
        await tr.close()
    await ticker.aclose()
    for caller in callers:
        caller.sock.close()


async def test_the_tick_sends_before_it_reads_the_shared_socket() -> None:
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1")
    assert endpoint.read_in_tick  # alone, it reads in its own tick callback
    tr = await RtpTransport.open("ulaw", endpoint=endpoint, name="order")
    assert not endpoint.read_in_tick  # the transports' batch reads it after sending
    caller = _Caller()
    tr.set_remote(*caller.sock.getsockname()[:2])
    steps: list[str] = []
    flush, read = endpoint.flush, endpoint.read

    def flush_noted() -> None:
        steps.append("send")
        flush()

    def read_noted() -> None:
        steps.append("read")
        read()

    endpoint.flush = flush_noted  # type: ignore[method-assign]
    endpoint.read = read_noted  # type: ignore[method-assign]
    await tr.send(AudioChunk(b"\x10" * 160, 8000, Codec.ULAW))
    caller.send(tr.local_address, b"\x20" * 160)
    got = await asyncio.wait_for(anext(tr.frames()), 2.0)
    assert got.data == b"\x20" * 160
    assert steps[:2] == ["send", "read"]
    assert all(steps[i] == "send" for i in range(0, len(steps) - 1, 2))
    assert ticker.sent_lateness  # each send noted against its tick's deadline
    await tr.close()
    await ticker.aclose()
    caller.sock.close()


def test_note_sent_measures_from_the_current_ticks_deadline() -> None:
    now = [100.0]
    ticker = Ticker(clock=lambda: now[0])
    ticker.note_sent()  # no tick yet: nothing to measure against
    assert ticker.sent_lateness == []
    ticker.pacer = Pacer(clock=lambda: now[0])
    now[0] = 100.020
    ticker.pacer.advance()  # the first tick, due at 100.0
    now[0] = 100.0035
    ticker.note_sent()
    assert ticker.sent_lateness == [pytest.approx(0.0035)]
