"""Pacer deadline arithmetic with an injected clock (no wall-clock timing asserts)."""

from __future__ import annotations

import asyncio
import time
import weakref

import pytest
from garbage import collector_off

from voxtra.media.pacer import Pacer, Ticker


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_deadlines_are_start_plus_n_periods() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk)
    deadlines = []
    for _ in range(1000):
        deadlines.append(p.next_deadline)
        clk.t = p.next_deadline + 0.0013  # always wake 1.3 ms late
        assert p.advance() == 0
    assert deadlines[0] == pytest.approx(100.0)
    assert deadlines[999] == pytest.approx(100.0 + 999 * 0.020)  # lateness never accumulates


def test_delay_counts_down_to_deadline() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk)
    p.advance()
    assert p.delay() == pytest.approx(0.020)
    clk.t += 0.015
    assert p.delay() == pytest.approx(0.005)
    clk.t += 0.010
    assert p.delay() == 0.0


def test_small_lag_catches_up_without_skipping() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk, max_behind_frames=4)
    clk.t += 0.070  # 3.5 frames behind: send the backlog back-to-back
    assert [p.advance() for _ in range(4)] == [0, 0, 0, 0]
    assert p.delay() == pytest.approx(0.010)
    assert p.resyncs == 0


def test_large_lag_resyncs_instead_of_bursting() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk, max_behind_frames=4)
    p.advance()
    clk.t += 0.5  # blocked for half a second
    skipped = p.advance()
    assert skipped == 24  # slots 1..24 dropped; slot 25 (t=+0.5 s) is sent now
    assert p.frame_index == 26
    assert p.next_deadline == pytest.approx(100.52)
    assert p.delay() == pytest.approx(0.020)
    assert p.resyncs == 1 and p.frames_skipped == 24


def test_reset_starts_new_timeline() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk)
    p.advance()
    clk.t = 250.0
    p.reset()
    assert p.next_deadline == 250.0 and p.frame_index == 0


async def test_wait_does_not_sleep_when_due_and_records_lateness() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk)
    clk.t = 100.0035
    assert await p.wait() == 0
    assert p.last_lateness == pytest.approx(0.0035)
    clk.t = 101.0
    assert await p.wait() > 0  # resynced
    assert 0 <= p.last_lateness < 0.020


async def test_ticker_drives_all_callbacks_and_isolates_failures() -> None:
    ticker = Ticker(1)  # 1 ms ticks keep the test short; counts only, no timing asserts
    calls: dict[str, int] = {"a": 0, "b": 0, "bad": 0}

    def cb(name: str):  # type: ignore[no-untyped-def]
        def f(_skipped: int) -> None:
            calls[name] += 1
            if name == "bad":
                raise RuntimeError("boom")

        return f

    ha = ticker.add(cb("a"))
    ticker.add(cb("b"))
    ticker.add(cb("bad"))
    while calls["a"] < 5:
        await asyncio.sleep(0.002)
    assert calls["bad"] == 1  # removed after failing
    ticker.remove(ha)
    a_then = calls["a"]
    b_then = calls["b"]
    while calls["b"] < b_then + 3:
        await asyncio.sleep(0.002)
    assert calls["a"] == a_then
    assert len(ticker) == 1 and len(ticker.lateness) >= 5
    await ticker.aclose()


async def test_ticker_hook_is_shared_and_runs_after_every_callback() -> None:
    ticker = Ticker(1)
    log: list[str] = []

    class Batch:
        def __init__(self) -> None:
            self.items: list[str] = []
            self.fail = True

        def after_tick(self) -> None:
            log.append(f"batch{len(self.items)}")
            self.items.clear()
            if self.fail:
                self.fail = False
                raise RuntimeError("a failing hook is logged, not removed")

    made: list[Batch] = []

    def factory() -> Batch:
        made.append(Batch())
        return made[-1]

    batch = ticker.hook("k", factory)
    assert ticker.hook("k", factory) is batch and len(made) == 1

    def stream(name: str):  # type: ignore[no-untyped-def]
        def f(_skipped: int) -> None:
            log.append(name)
            batch.items.append(name)

        return f

    ticker.add(stream("a"))
    ticker.add(stream("b"))
    while log.count("batch2") < 3:
        await asyncio.sleep(0.002)
    await ticker.aclose()
    first = log.index("batch2")
    assert log[first - 2 : first + 1] == ["a", "b", "batch2"]  # after both callbacks
    assert log[:3] == ["a", "b", "batch2"]  # the first tick's hook raised and still ran later


async def test_wait_returns_within_the_early_margin_without_sleeping() -> None:
    clk = FakeClock()
    p = Pacer(20, clock=clk, early_s=0.0005)
    p.advance()  # next deadline: 100.020
    clk.t = 100.0197  # 0.3 ms before it: inside the margin, so no sleep at all
    assert await p.wait() == 0
    assert p.last_lateness == pytest.approx(-0.0003)
    assert p.next_deadline == pytest.approx(100.040)  # the timeline is unchanged


async def test_real_wakes_are_centred_on_the_deadlines() -> None:
    p = Pacer(5)  # real clock and sleep; 5 ms frames keep it short
    errors = []
    for _ in range(40):
        await p.wait()
        errors.append(p.last_lateness)
    errors.sort()
    assert errors[0] >= -0.0005 - 1e-6  # never earlier than the margin
    assert errors[len(errors) // 2] < 0.004  # typical wake well inside a frame


async def test_ticker_wakes_from_a_loop_timer_not_a_sleeping_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each tick runs in a timer callback: no asyncio.sleep (a future and a task step
    per wake, which cost 110-125 us of CPU a wake against 72-92 on this VM)."""

    async def no_sleep(_delay: float) -> None:
        raise AssertionError("the ticker slept in its task")

    ticker = Ticker(1)
    ticks: list[int] = []
    ticker.add(ticks.append)
    monkeypatch.setattr("voxtra.media.pacer.asyncio.sleep", no_sleep)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_later(0.05, done.set_result, None)  # a wait that is no asyncio.sleep
    await done
    monkeypatch.undo()
    assert len(ticks) >= 5 and ticks.count(0) >= 5
    await ticker.aclose()


async def test_ticker_task_ends_with_the_last_stream_and_reports_a_failed_tick() -> None:
    ticker = Ticker(1)
    n = [0]
    h = ticker.add(lambda _s: n.__setitem__(0, n[0] + 1))
    while n[0] < 3:
        await asyncio.sleep(0.002)
    task = ticker._task
    assert task is not None
    ticker.remove(h)
    await asyncio.wait_for(task, 1.0)  # the last stream left: the task ends
    assert ticker._task is None

    ticker.add(lambda _s: None)
    assert ticker.pacer is not None

    def broken() -> int:
        raise RuntimeError("pacer bug")

    ticker.pacer.arrive = broken  # type: ignore[method-assign]
    task = ticker._task
    assert task is not None
    with pytest.raises(RuntimeError, match="pacer bug"):
        await asyncio.wait_for(task, 1.0)  # not a ticker that silently stopped


async def test_ticker_task_cancelled_during_a_tick_stops_quietly() -> None:
    # A stream closed inside its own tick cancels the ticker's task from within the
    # timer callback (aclose); the callback used to go on and set the result of the
    # cancelled future: InvalidStateError in the loop's exception handler.
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        ticker = Ticker(1)
        cancelled: list[asyncio.Task[None]] = []

        def close_within_the_tick(_skipped: int) -> None:
            # The last stream leaves and the ticker's task is cancelled, both inside
            # the tick, as aclose() does from a stream closed in its own callback.
            ticker.remove(handle)
            task = ticker._task
            assert task is not None
            task.cancel()
            cancelled.append(task)

        handle = ticker.add(close_within_the_tick)
        while not cancelled:
            await asyncio.sleep(0.002)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(cancelled[0], 1.0)
        await asyncio.sleep(0.01)  # any wake scheduled after the tick has run by now
    finally:
        loop.set_exception_handler(previous)
    assert errors == []


class _NewCall:
    """A stream added to ``ticker`` by ``add()``; notes the ticks (``len(lateness)``,
    which counts every tick) when it was added and when it was first ticked."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self.added_at: int | None = None
        self.first_tick: int | None = None
        self.handle: int | None = None

    def add(self) -> None:
        self.added_at = len(self.ticker.lateness)
        self.handle = self.ticker.add(self)

    def __call__(self, _skipped: int) -> None:
        if self.first_tick is None:
            self.first_tick = len(self.ticker.lateness)

    async def ticked(self) -> None:
        for _ in range(500):  # up to 1 s of 2 ms polls; a ticking ticker needs a frame
            if self.first_tick is not None:
                break
            await asyncio.sleep(0.002)
        assert self.first_tick is not None, "added while the ticker stopped: never ticked"
        assert self.added_at is not None
        assert self.first_tick - self.added_at <= 2  # the tick after, or the one after it
        assert len(self.ticker) == 1 and self.ticker._task is not None


async def test_a_stream_added_after_the_empty_tick_before_the_task_ends_is_ticked() -> None:
    # The last stream leaves in its tick, which stops the ticker's task, and the next
    # stream's add() runs in the loop pass after, before the task resumes: it saw the
    # task not done yet and started none, and the stream was never ticked (0 ticks in
    # 0.5 s): dead air both ways for the new call.
    loop = asyncio.get_running_loop()
    ticker = Ticker(5)
    new = _NewCall(ticker)

    def last_stream_leaves(_skipped: int) -> None:
        ticker.remove(handle)
        loop.call_soon(new.add)  # queued before the task's wake-up from the stop

    handle = ticker.add(last_stream_leaves)
    await new.ticked()
    assert new.added_at == 1  # right after the tick that stopped the ticker
    await ticker.aclose()


async def test_a_stream_added_in_the_loop_pass_of_the_empty_tick_is_ticked() -> None:
    with collector_off():
        freed = await _add_in_the_loop_pass_of_the_empty_tick()
        # Stopped twice (restarted in between), it held no cycle through its wakes.
        assert freed() is None


async def _add_in_the_loop_pass_of_the_empty_tick() -> weakref.ref[Ticker]:
    # The last stream leaves between ticks; the next tick finds none and stops the
    # task, and the next stream's add() runs in that same loop pass, after the tick,
    # while the task (resumed only in a later pass) is not done yet.
    loop = asyncio.get_running_loop()
    ticker = Ticker(5)
    new = _NewCall(ticker)

    def last_stream_leaves() -> None:
        ticker.remove(handle)
        assert ticker.pacer is not None
        # Due 2 ms after the next tick's timer (aimed 0.5 ms before its deadline), so
        # it runs after that tick; the loop blocked 20 ms here makes both due in one
        # pass.
        loop.call_later(ticker.pacer.delay() + 0.002, new.add)
        time.sleep(0.02)

    def first_tick(_skipped: int) -> None:
        loop.call_soon(last_stream_leaves)  # between this tick and the next

    handle = ticker.add(first_tick)
    await new.ticked()
    assert new.added_at == 2  # in the pass of the second tick, the empty one, after it
    task = ticker._task
    assert task is not None and new.handle is not None
    ticker.remove(new.handle)
    await asyncio.wait_for(task, 1.0)  # its last stream gone, the task ends as before
    assert ticker._task is None
    return weakref.ref(ticker)
