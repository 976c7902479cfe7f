"""A call's ``on_call_end`` hooks run exactly once, however the call ended: hung up,
its handler failed, its task cancelled while it waited for its teardown, or
``stop()`` giving up on a stuck teardown; each hook for at most ``call_end_timeout``
seconds, so a stuck one neither keeps the hooks after it from running nor holds
``stop()``.

The hooks used to be skipped when the cancel came while the call waited for its
teardown: the trace span (voxtra.tracing) was never ended, and the platform's call
row stayed "in progress" (tests/integration/platform/test_platform_call_end.py).
A teardown is held here by an ``on_hangup`` callback that never returns (as a
recording fetch that never answers would).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apps import fake_app

from voxtra import CallEndReason, CallSession, CallState, VoxtraApp
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., VoxtraApp]:
    return functools.partial(fake_app, tmp_path, "end-hook-tests")


def _call_task(call_id: str) -> asyncio.Task[object]:
    """The app's task running call ``call_id`` (named ``voxtra-call-<id>``)."""
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"voxtra-call-{call_id}"]
    return task


async def test_stop_giving_up_on_a_stuck_teardown_still_runs_the_end_hooks_once(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    app.teardown_timeout = 0.3
    ended: list[tuple[str, CallEndReason | None]] = []
    holding = asyncio.Event()

    @app.on_call_end
    async def record(call: CallSession) -> None:
        ended.append((call.id, call.end_reason))

    @app.route("1000")
    async def answer(call: CallSession) -> None:
        await call.answer()

        @call.on_hangup
        async def fetch_forever(c: CallSession) -> None:
            await asyncio.Event().wait()

        holding.set()
        await call.wait_ended()

    async with asyncio.timeout(10):  # stop() is bounded: this never fires
        async with fake_asterisk.serve(app):
            channel = await fake_asterisk.incoming(extension="1000")
            await holding.wait()
    assert ended == [(channel.id, CallEndReason.SHUTDOWN)]
    assert app.active_sessions == {}


async def test_a_call_cancelled_while_it_waits_for_its_teardown_runs_the_hooks_after_it(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    order: list[str] = []
    in_teardown = asyncio.Event()
    fetched = asyncio.Event()

    @app.on_call_end
    async def record(call: CallSession) -> None:
        order.append("on_call_end")

    @app.route("1000")
    async def answer(call: CallSession) -> None:
        await call.answer()

        @call.on_hangup
        async def slow_fetch(c: CallSession) -> None:
            in_teardown.set()
            await fetched.wait()
            order.append("teardown done")

    async with fake_asterisk.serve(app):
        channel = await fake_asterisk.incoming(extension="1000")
        await in_teardown.wait()  # the handler returned, the call hung up
        call_task = _call_task(channel.id)
        call_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call_task
        fetched.set()  # the teardown goes on, then the hooks run
        await fake_asterisk.wait_until(lambda: "on_call_end" in order)
        assert order == ["teardown done", "on_call_end"]
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
    assert order == ["teardown done", "on_call_end"]  # once: stop() ran none again


async def test_a_stuck_end_hook_is_cut_at_call_end_timeout_and_the_next_still_runs(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    app = make_app()
    app.call_end_timeout = 0.2
    seen: list[str] = []

    @app.on_call_end
    async def stuck(call: CallSession) -> None:
        try:
            await asyncio.Event().wait()  # a store that never answers
        except asyncio.CancelledError:
            seen.append("stuck hook cancelled")
            raise

    @app.on_call_end
    async def record(call: CallSession) -> None:
        seen.append(f"ended {call.end_reason}")

    @app.route("1000")
    async def answer(call: CallSession) -> None:
        await call.answer()

    async with fake_asterisk.serve(app):
        channel = await fake_asterisk.incoming(extension="1000")
        await channel.wait_ended()
        await fake_asterisk.wait_until(lambda: len(seen) == 2)
    assert seen == ["stuck hook cancelled", f"ended {CallEndReason.HANGUP}"]


async def test_stop_cancelling_a_stuck_end_hook_still_runs_the_hooks_after_it(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    """stop() gives up on the call (teardown_timeout) while its first hook is stuck:
    that hook is cut, the next one still runs, once, before stop() returns."""
    app = make_app()
    app.teardown_timeout = 0.3
    seen: list[str] = []
    hooked = asyncio.Event()

    @app.on_call_end
    async def stuck(call: CallSession) -> None:
        hooked.set()
        await asyncio.Event().wait()

    @app.on_call_end
    async def record(call: CallSession) -> None:
        seen.append(call.id)

    @app.route("1000")
    async def answer(call: CallSession) -> None:
        await call.answer()

    async with asyncio.timeout(10):  # bounded: the default call_end_timeout is 10 s
        async with fake_asterisk.serve(app):
            channel = await fake_asterisk.incoming(extension="1000")
            await hooked.wait()
    assert seen == [channel.id]


@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
async def test_the_end_hooks_run_once_after_a_handler_returns_or_raises(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp], fails: bool
) -> None:
    app = make_app()
    ended: list[tuple[str, CallState]] = []

    @app.on_call_end
    async def record(call: CallSession) -> None:
        ended.append((call.id, call.state))

    @app.route("1000")
    async def answer(call: CallSession) -> None:
        await call.answer()

        @call.on_hangup  # something to tear down: the teardown runs in a task of its own
        async def note(c: CallSession) -> None:
            pass

        if fails:
            raise RuntimeError("a handler's bug")

    async with fake_asterisk.serve(app):
        channel = await fake_asterisk.incoming(extension="1000")
        await channel.wait_ended()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
    state = CallState.FAILED if fails else CallState.COMPLETED
    assert ended == [(channel.id, state)]


async def test_the_trace_span_of_a_call_stop_gives_up_on_is_ended(
    fake_asterisk: FakeAsterisk, make_app: Callable[..., VoxtraApp]
) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from voxtra.tracing import instrument

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app()
    app.teardown_timeout = 0.3
    instrumentation = instrument(app, tracer_provider=provider)
    holding = asyncio.Event()

    @app.route("1000")
    async def answer(call: CallSession) -> None:
        await call.answer()

        @call.on_hangup
        async def fetch_forever(c: CallSession) -> None:
            await asyncio.Event().wait()

        holding.set()
        await call.wait_ended()

    async with fake_asterisk.serve(app):
        channel = await fake_asterisk.incoming(extension="1000")
        await holding.wait()
    (span,) = exporter.get_finished_spans()
    assert span.name == "voxtra.call"
    assert span.attributes is not None
    assert span.attributes["voxtra.call.id"] == channel.id
    assert span.attributes["voxtra.call.end_reason"] == "shutdown"
    assert instrumentation.calls == {}
