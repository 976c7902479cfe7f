"""A conversation leaves no reference cycle: once its pipeline is let go, reference
counting frees it, without the cyclic collector (tests/unit/test_call_garbage.py says
why that matters). Two kinds of cycle held a whole pipeline (its buffers, history and
providers' streams) until the collector's middle generation ran:

- each task its anyio task groups cancel: anyio's task-done callback kept the task's
  CancelledError in a local, and the error's traceback held that callback's frame
  (one a turn, four more at each call's end; ``voxtra.pipeline.pipeline._start``);
- an exception kept by a frame its own traceback holds (a transport closing under a
  send, a provider's stream ending under ``_within``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import anyio
import pytest
from garbage import collector_off, cyclic_garbage

from voxtra.errors import CallEnded
from voxtra.media.frames import AudioChunk
from voxtra.pipeline.events import BargeInEvent, TurnMetrics
from voxtra.pipeline.pipeline import EndReason, VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS, words

LONG = "Our opening hours are nine to five on weekdays. On Saturdays we open at ten."


@pytest.fixture(autouse=True)
def no_collector() -> Iterator[None]:
    with collector_off():
        yield


def _left(ref: weakref.ref[VoicePipeline]) -> list[str]:
    """What is still alive or only the cyclic collector would free (empty: nothing)."""
    alive = ["the pipeline"] if ref() is not None else []
    return alive + cyclic_garbage((VoicePipeline, BaseException))


async def _conversation(media: MemoryMediaIO) -> tuple[weakref.ref[VoicePipeline], list[str]]:
    """A question whose answer the caller cuts short, a second one answered, the hang-up."""
    clock = media.clock
    pipeline = VoicePipeline(
        ScriptedSTT(["when are you open", "thanks"], clock),
        ScriptedLLM([Reply(words(LONG)), Reply(["You're welcome."])], clock, delay=0.15),
        ScriptedTTS(clock),
        EnergyVAD(),
    )
    kinds: list[str] = []
    pipeline.on_event(lambda event: kinds.append(type(event).__name__))

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.played_ms >= 1500, 20)
        media.inject(tone_frames(400, level_db=-15))  # over the agent: a barge-in
        await media.wait_until(lambda: kinds.count("TurnMetrics") == 2, 20)
        await media.wait_until(lambda: media.queued_ms == 0, 20)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        reason = await pipeline.run(media, clock=clock, call_id="c1")
    assert reason is EndReason.HANGUP
    return weakref.ref(pipeline), kinds


async def test_a_conversation_with_a_barge_in_leaves_no_cycle() -> None:
    ref, kinds = await _conversation(MemoryMediaIO())
    assert kinds.count(TurnMetrics.__name__) == 2 and BargeInEvent.__name__ in kinds
    assert _left(ref) == []


class _ClosingMedia(MemoryMediaIO):
    """Refuses audio once hung up, as the transports do."""

    async def send(self, chunk: AudioChunk) -> None:
        if self.hung_up:
            raise CallEnded("c1", "media transport closed")
        await super().send(chunk)


async def _cut_mid_answer() -> weakref.ref[VoicePipeline]:
    """The caller hangs up while the answer is sent: the send raises CallEnded."""
    media = _ClosingMedia()
    clock = media.clock
    pipeline = VoicePipeline(
        ScriptedSTT(["when are you open"], clock),
        ScriptedLLM([Reply(words(LONG))], clock),
        ScriptedTTS(clock),
        EnergyVAD(),
        tts_timeout=None,
    )
    media.inject(tone_frames(600, level_db=-15))

    async def hang_up() -> None:
        await media.wait_until(lambda: pipeline.speaking, 10)
        await clock.sleep(0.5)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hang_up)
        assert await pipeline.run(media, clock=clock, call_id="c1") is EndReason.HANGUP
    return weakref.ref(pipeline)


async def test_a_caller_hanging_up_mid_answer_leaves_no_cycle() -> None:
    assert _left(await _cut_mid_answer()) == []


async def _barge_in_on_the_real_clock() -> weakref.ref[VoicePipeline]:
    """Real time: the provider waits are cancel scopes, not timer tasks."""
    media = MemoryMediaIO(virtual=False)
    pipeline = VoicePipeline(None, None, ScriptedTTS(media.clock, first_byte=0.0), EnergyVAD())

    async def interrupt() -> None:
        await anyio.sleep(0.3)
        media.inject(tone_frames(300, level_db=-15))

    async with pipeline.attach(media, clock=media.clock), anyio.create_task_group() as tg:
        tg.start_soon(interrupt)
        assert (await pipeline.say(LONG)).interrupted
    return weakref.ref(pipeline)


async def test_a_barge_in_on_the_real_clock_leaves_no_cycle() -> None:
    assert _left(await _barge_in_on_the_real_clock()) == []
