"""The voice pipeline: VAD -> STT -> LLM -> TTS for one call, with real barge-in.

Per call, everything runs in one task group (structured concurrency): the input loop
(frames -> VAD -> turn detector, frames -> STT sender), the STT reader, and, in
autonomous mode, the conversation loop. Cancelling the group ends the call's work as
a unit; nothing outlives it.

An answer streams through two stages joined by a bounded queue: LLM deltas are cut
into sentences by :class:`SentenceChunker` and queued; a TTS stage synthesises each
sentence as soon as it is queued and hands the audio to the transport. When the caller
starts speaking over the agent, the input loop cancels both stages and flushes the
transport at once, then the part of the answer that was actually played (from the
transport's ``played_ms`` and each sentence's position on the playout timeline) is
what stays in the history.

``say`` and ``listen`` work without the autonomous loop: ``attach(media)`` runs only
the input side, which the session API needs to hear the caller and detect barge-in.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

import anyio
import numpy as np
import numpy.typing as npt
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from voxtra.errors import CallEnded, PipelineNotConfigured, ProviderError, VoxtraError
from voxtra.media import g711
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import FRAME_MS, AudioChunk, Codec
from voxtra.pipeline.agent import (
    MAX_HISTORY_CHARS,
    Agent,
    AgentStream,
    Tool,
    ToolFunc,
    spoken_answer,
)
from voxtra.pipeline.chunker import SentenceChunker
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SayResult,
    SilenceTimeoutEvent,
    SpeechEndedEvent,
    SpeechStartedEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from voxtra.pipeline.heard import heard_words
from voxtra.pipeline.io import Clock, ConvertingMediaIO, MediaIO, MonotonicClock
from voxtra.pipeline.turn import (
    BACKCHANNELS,
    END_SILENCE_MS,
    MIN_SPEECH_MS,
    TurnDetector,
    frame_energy_db,
    is_backchannel,
    is_echo,
    looks_unfinished,
    pcm16_energy_db,
)
from voxtra.providers.base import LLM, STT, TTS, VAD, ChatMessage, STTStream, VADSession

__all__ = [
    "DEFAULT_FALLBACK",
    "EndReason",
    "EventCallback",
    "PipelineInUse",
    "PipelineNotAttached",
    "ProviderTimeout",
    "VoicePipeline",
]

logger = logging.getLogger(__name__)

DEFAULT_FALLBACK = "Sorry, I had a problem. Could you say that again?"
NOT_UNDERSTOOD = "Sorry, I did not catch that. Could you say it again?"
"""Said when the caller spoke but the STT recognised nothing (``not_understood_text``)."""
UNHEARD_MIN_SPEECH_MS = 300.0
"""Speech that long with an empty transcript is a caller not understood, not a cough or
a click (those stay unanswered, as before: answering every noise is worse)."""
_NO_VAD_SPEECH_DB = -40.0
_SILENCE_LEVEL_DB = -100.0
"""``frame_energy_db`` of digital silence."""
_NO_LEVEL = float("-inf")
"""No agent level found (every level is at least ``_SILENCE_LEVEL_DB``)."""
_ECHO_TAIL_MS = 200.0
"""How long the agent's audio is taken to come back as echo after it played (the
phone's echo path plus the network and jitter buffers both ways)."""
_STT_REOPEN_S = 0.5
_STT_HOLD_MS = 5000.0
"""Caller audio kept (on top of the pre-roll) while no STT stream is open: a cold
pocketsphinx provider takes 470-490 ms to open its first stream here (keywords; 620-650
ms open vocabulary: the decoder process starts), a reopen 0.5 s plus the open. The
first question of a call is said in that time; 5 s of it costs 40 KB of u-law."""

T = TypeVar("T")
EventCallback = Callable[[PipelineEvent], None]


class EndReason(StrEnum):
    """Why ``run()`` returned."""

    HANGUP = "hangup"
    SILENCE_TIMEOUT = "silence_timeout"
    MAX_DURATION = "max_duration"


def _pipeline_args(missing: list[str]) -> str:
    return f"VoicePipeline({', '.join(f'{m}=...' for m in missing)})"


class PipelineNotAttached(VoxtraError, RuntimeError):
    """``say``/``listen`` on a pipeline that is not attached to a call's media."""


class PipelineInUse(VoxtraError, RuntimeError):
    """``attach`` on a pipeline already attached to a call (one pipeline per call)."""


class ProviderTimeout(ProviderError, TimeoutError):
    """A provider did not answer within its deadline (``stt_timeout`` and so on)."""


def _start(tg: TaskGroup, fn: Callable[..., Awaitable[object]], *args: object) -> None:
    """``tg.start_soon(fn, *args)``, but a task the group cancels ends by returning.

    Why: anyio's task-done callback (4.16, the newest) keeps a cancelled task's
    CancelledError in a local, and the error's traceback then holds that callback's
    frame: a reference cycle that held the task's frames, and through them the
    pipeline, its buffers and its history, until the cyclic collector's middle
    generation ran (one a turn, four more at the end of each call: tests/unit/pipeline/
    test_pipeline_garbage.py). A task that returns leaves none. Cancellation still
    ends the task at once; none of these tasks is cancelled but by its own group.
    """
    name = f"{fn.__module__}.{fn.__qualname__}"
    tg.start_soon(_ends_when_cancelled, fn, *args, name=name)


async def _ends_when_cancelled(fn: Callable[..., Awaitable[object]], *args: object) -> None:
    try:
        await fn(*args)
    except anyio.get_cancelled_exc_class():
        return


class _Expired(TimeoutError):
    """A wait on a provider passed its deadline (raised by ``VoicePipeline._within``)."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"no {what} within {seconds:g} s")


class _StageError(Exception):
    """A provider failed inside a stage; carries the provider's name and stage."""

    def __init__(self, provider: str, exc: BaseException, stage: str) -> None:
        super().__init__(f"{provider}: {type(exc).__name__}: {exc}")
        self.provider = provider
        self.stage = stage
        self.timed_out = isinstance(exc, _Expired)
        self.message = f"TimeoutError: {exc}" if self.timed_out else f"{type(exc).__name__}: {exc}"

    def event(self, at: float) -> ProviderErrorEvent:
        return ProviderErrorEvent(self.provider, self.message, at, self.stage, self.timed_out)

    def error(self) -> ProviderError:
        kind = ProviderTimeout if self.timed_out else ProviderError
        return kind(self.provider, self.message)


class _Queue(Generic[T]):
    """Bounded FIFO that drops the oldest item when full (and counts the drops)."""

    def __init__(self, maxlen: int) -> None:
        self.items: deque[T] = deque()
        self.maxlen = maxlen
        self.dropped = 0
        self.closed = False
        self._event = anyio.Event()

    def __len__(self) -> int:
        return len(self.items)

    def _wake(self) -> None:
        event, self._event = self._event, anyio.Event()
        event.set()

    def put(self, item: T, *, wake: bool = True) -> None:
        """Queue ``item``; ``wake=False`` leaves the reader asleep until ``wake()``
        (the caller's audio for the STT is handed over in batches)."""
        if len(self.items) >= self.maxlen:
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        if wake:
            self._wake()

    def wake(self) -> None:
        """Wake the reader for what was put with ``wake=False``."""
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def get(self) -> T | None:
        """Next item, or None once closed and empty."""
        while not self.items:
            if self.closed:
                return None
            await self._event.wait()
        return self.items.popleft()


@dataclass(eq=False)
class _Segment:
    """One sentence of agent speech and where its audio sits on the playout timeline."""

    text: str
    message: ChatMessage | None
    start_pos: float | None = None
    end_pos: float = 0.0
    audio_ms: float = 0.0
    complete: bool = False

    def heard(self, played: float) -> str:
        if self.start_pos is None or played <= self.start_pos:
            return ""
        if self.complete and played >= self.end_pos - 1e-6:
            return self.text
        heard = min(played, self.end_pos) - self.start_pos
        return heard_words(self.text, heard, self.audio_ms, complete=self.complete)


@dataclass(eq=False)
class _Pending:
    """A caller onset over the agent, paused on, until it shows what it is."""

    out: _Output
    onset: float
    final: UserTranscriptEvent | None = None
    got_final: anyio.Event = field(default_factory=anyio.Event)


def _trim_front(chunk: AudioChunk, ms: float) -> AudioChunk:
    """``chunk`` without its first ``ms`` (whole samples)."""
    width = 2 if chunk.codec is Codec.PCM16 else 1
    cut = int(ms * chunk.sample_rate / 1000) * width
    return AudioChunk(chunk.data[cut:], chunk.sample_rate, chunk.codec)


@dataclass(eq=False)
class _Output:
    """One stretch of agent speech: a ``say`` or one turn's answer."""

    interruptible: bool
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    segments: list[_Segment] = field(default_factory=list)
    messages: list[ChatMessage] = field(default_factory=list)
    interrupted: bool = False
    call_ended: bool = False
    played_at_stop: float | None = None
    stopped_at: float = 0.0
    paused_at: float | None = None
    """Where the audio stopped for a caller onset that may be a backchannel; None while
    it plays. The TTS stage holds its audio until ``resume`` is set."""
    resume: anyio.Event = field(default_factory=anyio.Event)
    sent: deque[tuple[float, float, AudioChunk]] = field(default_factory=deque)
    """(start, end, chunk) on the playout timeline of audio sent and maybe not played:
    what is sent again when a paused answer resumes."""
    resumed: int = 0
    _started: bool = field(default=False, init=False, repr=False)

    @property
    def audio_started(self) -> bool:
        # Asked for every caller frame while an answer is on: once a segment has a
        # start, it keeps one (segments are only added, starts only shifted), so the
        # scan stops at the first True.
        if not self._started:
            self._started = any(s.start_pos is not None for s in self.segments)
        return self._started

    @property
    def start_pos(self) -> float:
        return min((s.start_pos for s in self.segments if s.start_pos is not None), default=0.0)

    @property
    def end_pos(self) -> float:
        return max((s.end_pos for s in self.segments), default=0.0)

    def heard_text(self, played: float) -> str:
        return " ".join(t for t in (s.heard(played) for s in self.segments) if t)

    def played_ms(self, played: float) -> float:
        if not self.audio_started:
            return 0.0
        return max(0.0, min(played, self.end_pos) - self.start_pos)


def _first_stage_error(group: BaseExceptionGroup[Any]) -> _StageError:
    """The first provider failure in a task group's exceptions; re-raise anything else."""
    matched, rest = group.split(_StageError)
    if rest is not None:
        raise rest
    assert matched is not None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, _StageError)
    return leaf


_STT_MAX_JOIN = 50
"""At most this many queued frames (1 s) go to the STT in one piece: a stream that
opened late gets what was held in a few messages, not one of 5 s."""


def _join_audio(first: AudioChunk, queued: deque[AudioChunk | None]) -> AudioChunk:
    """``first`` and the audio queued after it, up to an end-of-speech marker (None),
    a change of format or ``_STT_MAX_JOIN`` frames, as one chunk (taken off ``queued``)."""
    parts = [first.data]
    while queued and len(parts) < _STT_MAX_JOIN:
        nxt = queued[0]
        if nxt is None or nxt.codec is not first.codec or nxt.sample_rate != first.sample_rate:
            break
        parts.append(nxt.data)
        queued.popleft()
    if len(parts) == 1:
        return first
    return AudioChunk(b"".join(parts), first.sample_rate, first.codec)


_SQUARES: dict[Codec, npt.NDArray[np.float64]] = {}
"""Per G.711 code, its PCM16 sample squared (a table, filled on first use)."""


def _frame_levels_db(data: bytes, codec: Codec, step: int) -> list[float]:
    """``frame_energy_db`` of each ``step`` bytes of ``data`` (whole frames), at once.

    Sums of squared PCM16 samples are whole numbers far below 2**53, exact in float64
    in any order, and the log is ``math.log10`` as in ``frame_energy_db``: the same
    figures to the last bit. 11.7 us for a 100 ms u-law chunk, 33 us before (a decode,
    a float copy, einsum and numpy's log10 of five values, and numpy scalars to
    iterate): a chunk of every TTS answer's audio, ~6 a second a call while it talks."""
    if codec is Codec.PCM16:
        x = np.frombuffer(data, dtype="<i2").astype(np.float64)
        sums = np.square(x).reshape(-1, step // 2).sum(axis=1)
        count = step // 2
    else:
        squares = _SQUARES.get(codec)
        if squares is None:
            table = g711.decode_table(codec).astype(np.float64)
            squares = _SQUARES[codec] = table * table
        sums = squares[np.frombuffer(data, dtype=np.uint8)].reshape(-1, step).sum(axis=1)
        count = step
    full_scale = 32768.0**2
    levels: list[float] = []
    for total in sums.tolist():
        mean_square = total / count
        levels.append(
            _SILENCE_LEVEL_DB if mean_square < 1.0 else 10.0 * math.log10(mean_square / full_scale)
        )
    return levels


def _call_ended(group: BaseExceptionGroup[Any]) -> CallEnded | None:
    """The first ``CallEnded`` among a task group's exceptions, if the others (if any)
    are provider failures, which no longer matter once the call is over.

    A transport raises it from ``send`` once the call's media is closed, which can
    come before the input side sees ``frames()`` end (bench/agent_density.py hit it at
    hang-up); callers catch ``CallEnded``, not a task group's ``ExceptionGroup``.
    Anything else in the group (a bug) is not hidden: None, and the group goes on.
    The one returned is a copy: raised, the group's own would have the group as its
    context, which holds it (a cycle, with the frames of both tracebacks)."""
    matched, rest = group.split(CallEnded)
    if rest is not None and rest.split(_StageError)[1] is not None:
        return None
    leaf: BaseException | None = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf.anew() if isinstance(leaf, CallEnded) else None


async def _closing(source: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """Iterate a provider's stream and always close it, so cancelling stops the provider."""
    try:
        async for item in source:
            yield item
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


class VoicePipeline:
    """One call's voice conversation: VAD, endpointing, STT, the agent, TTS, barge-in.

    Create one per call (the :class:`Agent` and its history belong to it); the provider
    objects may be shared, since each call opens its own STT stream and VAD session.

    ``run(media)`` converses autonomously until the caller hangs up, stays silent past
    ``silence_timeout`` (after ``max_silence_prompts`` re-prompts with
    ``silence_prompt``) or ``max_duration`` passes. ``attach(media)`` instead runs only
    the listening side so an application can drive the call with ``say``/``listen``.
    All durations are seconds except ``min_speech_ms`` / ``end_silence_ms``.
    """

    def __init__(
        self,
        stt: STT | None = None,
        llm: LLM | None = None,
        tts: TTS | None = None,
        vad: VAD | None = None,
        *,
        system_prompt: str | None = None,
        tools: Iterable[ToolFunc | Tool] = (),
        agent: Agent | None = None,
        silence_timeout: float | None = None,
        silence_prompt: str | None = None,
        max_silence_prompts: int = 1,
        max_duration: float | None = None,
        min_speech_ms: float = MIN_SPEECH_MS,
        end_silence_ms: float = END_SILENCE_MS,
        input_rate: int | None = None,
        greeting: str | None = None,
        fallback_text: str | None = DEFAULT_FALLBACK,
        max_tool_steps: int = 5,
        max_history_chars: int | None = MAX_HISTORY_CHARS,
        min_comma_chars: int = 40,
        sentence_queue: int = 8,
        final_grace: float = 2.0,
        stt_preroll_ms: float | None = 500.0,
        stt_batch_ms: float | None = None,
        stt_timeout: float | None = 5.0,
        llm_timeout: float | None = 8.0,
        tts_timeout: float | None = 5.0,
        fallback_tts: TTS | None = None,
        not_understood_text: str | None = NOT_UNDERSTOOD,
        backchannels: Iterable[str] | None = BACKCHANNELS,
        backchannel_max_ms: float = 700.0,
        pause_hold_ms: float | None = 1200.0,
    ) -> None:
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.vad = vad
        # ``max_history_chars`` is the agent's (what each LLM request sends of the
        # call's history); ``VoiceConfig(options={"max_history_chars": ...})`` reaches it.
        self.agent = agent or Agent(
            llm,
            system_prompt=system_prompt,
            tools=tools,
            max_tool_steps=max_tool_steps,
            max_history_chars=max_history_chars,
        )
        self.silence_timeout = silence_timeout
        self.silence_prompt = silence_prompt
        self.max_silence_prompts = max_silence_prompts
        self.max_duration = max_duration
        self.greeting = greeting
        self.fallback_text = fallback_text
        self.min_comma_chars = min_comma_chars
        self.sentence_queue = sentence_queue
        self.final_grace = final_grace
        self.stt_preroll_ms = stt_preroll_ms
        """STT hears only the caller's turns, each with this much audio before the onset;
        None streams every frame. An utterance-level STT (pocketsphinx) decodes all it was
        sent since the last end of speech, and long silence before a question made it
        return nothing; it also keeps cloud STT from billing silence."""
        batch = stt_batch_ms if stt_batch_ms is not None else getattr(stt, "batch_ms", 0.0)
        self.stt_batch_ms: float = float(batch) if isinstance(batch, int | float) else 0.0
        """The caller's audio goes to the STT stream in pieces of this much (frames
        joined), not frame by frame; the end of speech sends what is held at once, so
        the final transcript is not delayed, only interim ones (by up to this much).
        None: what the STT asks for (its ``batch_ms``: DeepgramSTT 100 ms, where each
        piece is a WebSocket message: sending 20 ms frames cost ~65 us of CPU each,
        websockets framing and the send system call, 50 a second per talking caller,
        measured at 46 agent calls in bench/agent_density.py), else 0: every frame as
        it comes (the embedded recognisers judge pauses frame by frame)."""
        self.stt_timeout = stt_timeout
        """Deadline (s) for the final transcript after the caller stops speaking. A hung
        STT then ends the turn: ProviderErrorEvent, fallback line, the stream reopened."""
        self.llm_timeout = llm_timeout
        """Deadline (s) for each LLM wait: the first token, then each next delta."""
        self.tts_timeout = tts_timeout
        """Deadline (s) for each TTS wait: the first audio, then each next chunk."""
        self.fallback_tts = fallback_tts
        """Speaks ``fallback_text`` when ``tts`` itself is what failed (the embedded
        espeak-ng is a good choice: no network, no model). None: the caller hears
        nothing that turn, the error is still reported."""
        self.not_understood_text = not_understood_text
        """Spoken by the autonomous loop when the caller spoke (``UNHEARD_MIN_SPEECH_MS``
        or more) and the final transcript was empty: never silence after a question.
        None keeps quiet (``listen()`` never returns empty transcripts either way)."""
        self._utterance_ms = 0.0
        self.backchannels = frozenset(backchannels or ())
        """Words ("mm-hmm", "yeah", "okay") that, said alone while the agent speaks, do
        not interrupt it: at the caller's onset the agent's audio stops at once (the
        barge-in time is unchanged) and resumes where it stopped if the utterance was
        short (under ``backchannel_max_ms``) and only such words, nothing recognised, or
        the agent's own words come back as echo. Empty (or no STT): every onset over
        the agent interrupts it, as before."""
        self.backchannel_max_ms = backchannel_max_ms
        self.pause_hold_ms = pause_hold_ms
        """End of turn from the transcript's shape, when the STT gives a partial
        transcript in the caller's pause (Whisper does, from its early decode): a
        finished-looking one ends the turn at once; one that stops on a digit, "um",
        "and" or a comma holds the turn for this much silence (instead of
        ``end_silence_ms``), so a number read in groups is not cut. None: silence only."""
        self._pending: _Pending | None = None
        self._conversing = False
        self._out_levels: deque[tuple[float, float, float]] = deque()
        self._tail_played = 0.0
        self._tail_since = 0.0
        """The playout position last seen moving (or audio queued), and when: once
        nothing plays, the echo tail is counted on the clock from there."""
        """(start, end, level dBFS) of each agent chunk on the playout timeline: the
        reference the echo gate judges the caller's line against."""
        self.input_rate = input_rate
        """The rate every caller frame is converted to (PCM16), once, as it comes in: VAD,
        turn detection and STT all take that frame. None: the STT's ``sample_rate`` when
        it has one (pocketsphinx, Whisper: 16 kHz; Deepgram: what it was configured
        with), else the rate of the call's own frames (only G.711 is decoded)."""
        self.turn = TurnDetector(min_speech_ms=min_speech_ms, end_silence_ms=end_silence_ms)
        self.metrics: list[TurnMetrics] = []
        """Per-turn metrics of the autonomous loop, oldest first."""
        self.call_id = ""
        self._callbacks: list[EventCallback] = []
        self._subscribers: list[_Queue[PipelineEvent]] = []
        self._media: MediaIO | None = None
        self._clock: Clock = MonotonicClock()
        self._tg: TaskGroup | None = None
        self._ended: anyio.Event | None = None
        self._finals: _Queue[UserTranscriptEvent | ProviderErrorEvent] | None = None
        """Final transcripts, and an STT timeout's error (so the loop speaks the fallback)."""
        self._stt_audio: _Queue[AudioChunk | None] | None = None
        self._stt_stream: STTStream | None = None
        self._vad_session: VADSession | None = None
        self._output: _Output | None = None
        self._speak_lock: anyio.Lock | None = None
        self._sentences: MemoryObjectSendStream[_Segment] | None = None
        self._last_activity = 0.0
        self._last_speech_end: float | None = None
        self._awaiting_final = False
        self._final_in_pause: float | None = None
        """The turn's ``speech_ms`` when the STT gave its final in the caller's pause,
        before the turn detector ended the turn (None: it did not)."""
        self._vad_failed = False
        self._stt_scope: anyio.CancelScope | None = None
        self._stt_wake: anyio.Event | None = None
        self._stt_open = anyio.Event()
        """Set while ``_stt_stream`` is open; the sender waits on it, holding the audio."""
        self._stt_send_scope: anyio.CancelScope | None = None
        self._stt_dropped_warned = False
        self._stt_held_ms = 0.0
        """Audio queued for the STT since its sender was last woken (``stt_batch_ms``)."""

    # -- events

    def on_event(self, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for every event (inline: keep it quick, don't block)."""
        self._callbacks.append(callback)
        return callback

    def clear_event_handlers(self) -> None:
        """Forget every ``on_event`` callback (the call does this once it is over, so
        a handler that holds the call makes no reference cycle with it)."""
        self._callbacks.clear()

    async def events(self, maxlen: int = 256) -> AsyncIterator[PipelineEvent]:
        """Iterate events until the pipeline detaches; a slow reader loses the oldest."""
        queue: _Queue[PipelineEvent] = _Queue(maxlen)
        self._subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(queue)

    def _emit(self, event: PipelineEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("pipeline event callback failed")
        for queue in self._subscribers:
            queue.put(event)

    @property
    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each internal queue (for monitoring backpressure)."""
        sentences = self._sentences.statistics().current_buffer_used if self._sentences else 0
        return {
            "finals": len(self._finals) if self._finals else 0,
            "stt_audio": len(self._stt_audio) if self._stt_audio else 0,
            "sentences": sentences,
            "events": max((len(q) for q in self._subscribers), default=0),
        }

    @property
    def stt_frames_dropped(self) -> int:
        """Caller frames the STT never got because the audio queue was full: a stream
        that took more than ~5 s to open, or that takes audio slower than real time."""
        return self._stt_audio.dropped if self._stt_audio is not None else 0

    @property
    def speaking(self) -> bool:
        """Whether agent speech is in progress (being generated or played)."""
        return self._output is not None

    @property
    def last_metrics(self) -> TurnMetrics | None:
        return self.metrics[-1] if self.metrics else None

    # -- lifecycle

    @asynccontextmanager
    async def attach(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> AsyncIterator[VoicePipeline]:
        """Listen to ``media`` (VAD, endpointing, STT, barge-in) for the block's duration."""
        if self._media is not None:
            raise PipelineInUse("this VoicePipeline is already attached to a call")
        self._media = media
        self._clock = clock or MonotonicClock()
        self.call_id = call_id
        self._ended = anyio.Event()
        self._finals = _Queue(16)
        # Holds the audio while the STT stream opens or stalls (20 ms frames); then
        # the oldest goes, counted in stt_frames_dropped.
        self._stt_audio = _Queue(int(((self.stt_preroll_ms or 0.0) + _STT_HOLD_MS) // 20))
        self._stt_open = anyio.Event()
        self._speak_lock = anyio.Lock()
        self._vad_session = self.vad.session() if self.vad is not None else None
        self._last_activity = self._clock.now()
        # Nothing owed from an earlier attach (its speech_ms could match this one's).
        self._awaiting_final, self._final_in_pause = False, None
        self.turn.reset()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                _start(tg, self._input_loop, media)
                if self.stt is not None:
                    _start(tg, self._stt_reader, self.stt)
                    _start(tg, self._stt_sender)
                    if self.stt_timeout is not None:
                        _start(tg, self._stt_watchdog, self.stt, self.stt_timeout)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._media = None
            self._tg = None
            self._output = None
            for queue in self._subscribers:
                queue.close()

    async def run(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> EndReason:
        """Hold the whole conversation on ``media``; return why it ended."""
        missing = [n for n in ("stt", "llm", "tts") if getattr(self, n) is None]
        if missing:
            raise PipelineNotConfigured("VoicePipeline.run()", missing, _pipeline_args(missing))
        async with self.attach(media, clock=clock, call_id=call_id):
            return await self._converse()

    async def _converse(self) -> EndReason:
        assert self._ended is not None
        ended = self._ended
        self._conversing = True
        reason = EndReason.HANGUP
        async with anyio.create_task_group() as tg:

            async def conversation() -> None:
                nonlocal reason
                try:
                    reason = await self._conversation_loop()
                except CallEnded:
                    reason = EndReason.HANGUP
                tg.cancel_scope.cancel()

            async def watch_hangup() -> None:
                nonlocal reason
                await ended.wait()
                reason = EndReason.HANGUP
                tg.cancel_scope.cancel()

            async def deadline(seconds: float) -> None:
                nonlocal reason
                await self._clock.sleep(seconds)
                reason = EndReason.MAX_DURATION
                tg.cancel_scope.cancel()

            _start(tg, conversation)
            _start(tg, watch_hangup)
            if self.max_duration is not None:
                _start(tg, deadline, self.max_duration)
        return reason

    async def _conversation_loop(self) -> EndReason:
        if self.greeting:
            await self._say_quietly(self.greeting)
        prompts = 0
        while True:
            user = await self._wait_final(self.silence_timeout, errors=True, unheard=True)
            if isinstance(user, ProviderErrorEvent):
                await self._say_fallback(tts_hung=False)
                continue
            if user is None:
                assert self.silence_timeout is not None
                self._emit(SilenceTimeoutEvent(self.silence_timeout, self._clock.now()))
                if self.silence_prompt and prompts < self.max_silence_prompts:
                    prompts += 1
                    await self._say_quietly(self.silence_prompt)
                    continue
                return EndReason.SILENCE_TIMEOUT
            prompts = 0
            if not user.text:
                if self.not_understood_text:
                    await self._say_quietly(self.not_understood_text)
                continue
            await self.answer(user)

    # -- input side

    def _input_rate(self) -> int | None:
        if self.input_rate is not None:
            return self.input_rate
        rate = getattr(self.stt, "sample_rate", None)
        return rate if isinstance(rate, int) and rate > 0 else None

    async def _input_loop(self, media: MediaIO) -> None:
        assert self._ended is not None and self._stt_audio is not None
        clock = self._clock
        preroll: deque[AudioChunk] = deque()
        preroll_ms = 0.0
        # The one place caller audio is normalised (decoded, resampled): once per frame,
        # to PCM16 at the STT's rate. It used to be decoded three times (the energy
        # meter, WebRTC VAD, the STT's own converter); those now get PCM16 and pass it on.
        rate = self._input_rate()
        convert = ChunkConverter(Codec.PCM16, rate).convert if rate is not None else None
        converting = media if isinstance(media, ConvertingMediaIO) else None
        restore = converting.inbound_format if converting is not None else None
        if converting is not None and rate is not None:
            # A transport converts as frames arrive (RTP: every call's frames in one
            # batch per tick); ``convert`` then only meets frames queued before this.
            converting.set_inbound_format(Codec.PCM16, rate)
        # Per frame, for every call: what is read more than once is read once here
        # (a frame's duration is three property lookups; 50 frames a second a call).
        turn = self.turn
        stt_audio = self._stt_audio if self.stt is not None else None
        levels = self._out_levels
        frame_bytes, frame_rate, frame_ms = -1, 0, 0.0
        try:
            async for wire in media.frames():
                if convert is None:  # no rate asked for: the call's own, decoded
                    convert = ChunkConverter(Codec.PCM16, wire.sample_rate).convert
                frame = convert(wire)
                data = frame.data
                if not data:
                    continue
                if len(data) != frame_bytes or frame.sample_rate != frame_rate:
                    # Every frame of a call has the same length: its duration (three
                    # property look-ups) is worked out again only when that changes.
                    frame_bytes, frame_rate = len(data), frame.sample_rate
                    frame_ms = frame.duration_ms
                now = clock.now()
                energy = pcm16_energy_db(data)  # converted to PCM16 above
                speech = self._is_speech(frame, energy)
                out = self._output
                agent_speaking = out is not None and out.audio_started
                event = turn.feed(
                    speech,
                    energy,
                    frame_ms=frame_ms,
                    agent_speaking=agent_speaking,
                    at=now,
                    agent_level_db=(
                        self._agent_level_db(media, now, agent_speaking) if levels else None
                    ),
                )
                if stt_audio is not None:
                    if self.stt_preroll_ms is None:
                        stt_audio.put(frame, wake=False)
                        self._stt_held_ms += frame_ms
                    elif turn.in_speech or isinstance(event, SpeechEndedEvent):
                        while preroll:
                            stt_audio.put(preroll.popleft(), wake=False)
                        self._stt_held_ms += preroll_ms + frame_ms
                        preroll_ms = 0.0
                        stt_audio.put(frame, wake=False)
                    else:
                        preroll.append(frame)
                        preroll_ms += frame_ms
                        while preroll_ms > self.stt_preroll_ms and preroll:
                            preroll_ms -= preroll.popleft().duration_ms
                    if self._stt_held_ms >= self.stt_batch_ms:
                        self._stt_held_ms = 0.0
                        stt_audio.wake()
                if turn.in_speech:
                    self._last_activity = now
                if isinstance(event, SpeechStartedEvent):
                    self._emit(event)
                    await self._barge_in(now)
                elif isinstance(event, SpeechEndedEvent):
                    self._utterance_ms = event.speech_ms
                    self._last_activity = now
                    transcribed = event.speech_ms == self._final_in_pause
                    self._final_in_pause = None
                    if transcribed:
                        # The STT ended this utterance itself (its final came in this
                        # pause): no final is owed, and an end of speech sent now only
                        # drew an empty one (Deepgram's Finalize), which the loop then
                        # answered with "Sorry, I did not catch that".
                        self._emit(event)
                    else:
                        self._last_speech_end = now
                        self._awaiting_final = True
                        self._emit(event)
                        if self.stt is not None:
                            self._stt_held_ms = 0.0
                            self._stt_audio.put(None)  # marker: end of speech (sends the rest)
                        if self._stt_wake is not None:
                            self._stt_wake.set()
        finally:
            if converting is not None and restore is not None and rate is not None:
                converting.set_inbound_format(*restore)  # the next reader gets what it had
            self._ended.set()
            if self._finals is not None:
                self._finals.close()
            self._stt_audio.close()

    def _note_levels(self, chunk: AudioChunk, end: float) -> None:
        """Each 20 ms of ``chunk`` (ending at ``end`` on the playout timeline) and its
        level: the echo gate's reference. Per 20 ms, not per chunk: a 100-200 ms TTS
        chunk's mean level sat 8 dB under its loudest frames' echo (measured with
        bench/turn_quality.py), which the gate then took for the caller."""
        step = AudioChunk.frame_bytes(chunk.codec, chunk.sample_rate)
        data = chunk.data
        if step <= 0 or len(data) <= step:
            self._out_levels.append((end - chunk.duration_ms, end, frame_energy_db(chunk)))
            return
        start = end - chunk.duration_ms
        frame_ms = FRAME_MS
        whole = len(data) - len(data) % step
        # All whole frames' levels in one numpy pass (a chunk and an AudioChunk per
        # frame cost ~5 us each: 3 s of answer is 150 of them), the same figures as
        # frame_energy_db frame by frame.
        for level in _frame_levels_db(data[:whole], chunk.codec, step):
            self._out_levels.append((start, start + frame_ms, level))
            start += frame_ms
        if whole < len(data):
            tail = AudioChunk(data[whole:], chunk.sample_rate, chunk.codec)
            self._out_levels.append((start, start + tail.duration_ms, frame_energy_db(tail)))

    def _agent_level_db(self, media: MediaIO, now: float, speaking: bool) -> float | None:
        """The loudest agent audio that played in the last ``_ECHO_TAIL_MS``, or None.

        ``speaking``: an answer is still on (playing, or paused for a possible
        backchannel: the gate then holds as it is; bench/turn_quality.py with it
        lowered in the pause: 2 of 30 backchannels cut the agent off, 0 held)."""
        levels = self._out_levels
        played = media.played_ms
        if played != self._tail_played or media.queued_ms > 0 or speaking:
            self._tail_played = played
            self._tail_since = now
        else:
            # Nothing left to play: the playout position stands still, but the echo's
            # tail still ends 200 ms on. Counted on the position alone, the answer's last
            # 200 ms stayed "just played" until the agent spoke again, and a caller whose
            # voice had been taken for echo at the agent's start (echo return learnt as
            # 0 dB) stayed under the gate, deaf for the rest of the call (the assistant
            # on FakeAsterisk: no onset, no turn, for any later question).
            played += (now - self._tail_since) * 1000.0
        while levels and levels[0][1] < played - _ECHO_TAIL_MS:
            levels.popleft()
        # A comparison, not max(): ~11 levels a frame for every caller frame while the
        # agent talks, and a builtin call each was a third of this function's time.
        loudest = _NO_LEVEL
        for start, _end, level in levels:
            if start > played:
                break
            if level > loudest:
                loudest = level
        return None if loudest == _NO_LEVEL else loudest

    def _is_speech(self, frame: AudioChunk, energy: float) -> bool:
        if self._vad_session is None or self._vad_failed:
            return energy >= _NO_VAD_SPEECH_DB
        try:
            return bool(self._vad_session.is_speech(frame))
        except Exception as exc:
            # Fall back to the energy gate for the rest of the call, and say so once.
            self._vad_failed = True
            name = self.vad.name if self.vad is not None else "vad"
            logger.warning("VAD %s failed, using an energy gate: %r", name, exc)
            self._emit(_StageError(name, exc, "vad").event(self._clock.now()))
            return energy >= _NO_VAD_SPEECH_DB

    async def _barge_in(self, now: float, *, pause: bool = True) -> None:
        """Caller speech onset: cut the agent off if it is talking (or, with
        backchannels, stop its audio and decide when the utterance shows what it is)."""
        out = self._output
        media = self._media
        if out is None or media is None or not out.interruptible or out.interrupted:
            return
        if not out.audio_started:
            return  # still thinking: let the answer come (a cough must not eat it)
        if out.paused_at is not None:
            return  # already stopped for this caller; _decide settles it
        if pause and self.backchannels and self.stt is not None and self._tg is not None:
            out.paused_at = media.played_ms
            out.resume = anyio.Event()
            out.stopped_at = now
            await media.flush()
            self._drop_unplayed_levels(media.played_ms)
            self._pending = _Pending(out, now)
            _start(self._tg, self._decide, self._pending)
            return
        out.interrupted = True
        out.played_at_stop = media.played_ms
        out.stopped_at = now
        out.scope.cancel()
        await media.flush()
        self._drop_unplayed_levels(media.played_ms)

    def _drop_unplayed_levels(self, played: float) -> None:
        while self._out_levels and self._out_levels[-1][0] >= played:
            self._out_levels.pop()  # flushed: it never plays, so it never echoes

    async def _decide(self, pending: _Pending) -> None:
        """Interrupt or resume a paused answer, once the caller's utterance shows what
        it is: speech past ``backchannel_max_ms`` interrupts at once; a shorter one is
        judged by its transcript (backchannel words, nothing, or the agent's own words
        as echo: resume; anything else: interrupt)."""
        out = pending.out
        # No transcript within this (a hung STT): the caller did speak, so interrupt.
        give_up = (self.backchannel_max_ms + self.turn.end_silence_ms) / 1000.0 + (
            self.stt_timeout or 5.0
        )
        try:
            while not pending.got_final.is_set():
                now = self._clock.now()
                if out is not self._output or out.interrupted:
                    return
                if self.turn.speech_ms >= self.backchannel_max_ms:
                    break  # a sentence, not a backchannel
                if now - pending.onset >= give_up:
                    break
                await self._clock.sleep(0.02)
            final = pending.final
            agent_text = " ".join(s.text for s in out.segments)
            text = final.text if final is not None else None
            # Nothing recognised in short speech is a cough; in longer speech, a
            # caller not understood (as for the not-understood line), who did speak.
            noise = text == "" and self._utterance_ms < UNHEARD_MIN_SPEECH_MS
            if noise or (
                text and (is_backchannel(text, self.backchannels) or is_echo(text, agent_text))
            ):
                if final is not None and final.text and not self._conversing:
                    # Driven by the application: a "yes" said over its question is
                    # still its answer (listen() keeps finals heard during a say). The
                    # autonomous loop would answer it: not there.
                    assert self._finals is not None
                    self._finals.put(final)
                await self._resume(out)
                return
            if final is not None and self._finals is not None:
                self._finals.put(final)  # a real turn: answered after the interruption
            if out is self._output and not out.interrupted:
                out.interrupted = True
                out.played_at_stop = out.paused_at
                out.scope.cancel()
        finally:
            if self._pending is pending:
                self._pending = None

    async def _resume(self, out: _Output) -> None:
        """Play a paused answer on from where it stopped (its audio sent again)."""
        media = self._media
        paused = out.paused_at
        if media is None or paused is None or out is not self._output or out.interrupted:
            return
        shift = media.played_ms + media.queued_ms - paused
        for segment in out.segments:
            if segment.start_pos is not None and segment.start_pos >= paused:
                segment.start_pos += shift
            if segment.start_pos is not None and segment.end_pos > paused:
                segment.end_pos += shift
        held = [(start, end, chunk) for start, end, chunk in out.sent if end > paused]
        out.sent.clear()
        for start, _end, chunk in held:
            if start < paused:
                chunk = _trim_front(chunk, paused - start)
            if chunk.data:
                try:
                    await media.send(chunk)
                except CallEnded:
                    return  # hung up while paused: nothing left to resume
                end = media.played_ms + media.queued_ms
                out.sent.append((end - chunk.duration_ms, end, chunk))
                self._note_levels(chunk, end)
        out.paused_at = None
        out.resumed += 1
        out.resume.set()

    async def interrupt(self) -> None:
        """Stop the agent's current speech now, as a barge-in would (e.g. on DTMF); an
        answer still being thought of (no audio yet) is dropped."""
        out = self._output
        if out is not None and out.paused_at is not None and not out.interrupted:
            out.interrupted = True  # paused for a caller onset: stop for good
            out.played_at_stop = out.paused_at
            out.scope.cancel()
            return
        if out is not None and out.interruptible and not out.interrupted and not out.audio_started:
            # A caller's onset lets a thought-of answer come (a cough must not eat it);
            # a call from code means it: before, the whole answer played after the key.
            out.interrupted = True
            out.played_at_stop = 0.0
            out.scope.cancel()
            return
        await self._barge_in(self._clock.now(), pause=False)

    async def _stt_sender(self) -> None:
        """Feed the caller's audio to the STT stream without ever blocking the input loop.

        While no stream is open (the first one still opening, or a new one after a
        failure or a hang) the audio waits in the bounded ``_stt_audio`` queue and goes
        to the stream, in order, once it is open. It used to be dropped: the first
        question of a call, said while a cold pocketsphinx opened its stream, came out
        as its last words only, or not at all.
        """
        assert self._stt_audio is not None
        queue = self._stt_audio
        while True:
            stream = self._stt_stream
            if stream is None:
                await self._stt_open.wait()
                continue
            failed: Exception | None = None
            # Cancelled when the stream is dropped: a send stuck on a hung stream must
            # not keep the caller's audio from the next one. (One scope per stream: a
            # scope per frame cost ~10 us more per frame.)
            with anyio.CancelScope() as self._stt_send_scope:
                while failed is None:
                    item = await queue.get()
                    if item is None and queue.closed and not queue.items:
                        return
                    if self._stt_stream is not stream:
                        queue.items.appendleft(item)  # that stream is gone: keep it
                        break
                    if queue.dropped and not self._stt_dropped_warned:
                        self._stt_dropped_warned = True
                        logger.warning("STT not taking audio: the oldest caller audio is dropped")
                    if item is not None and queue.items and self.stt_batch_ms > 0:
                        item = _join_audio(item, queue.items)
                    try:
                        if item is None:
                            await stream.end_of_speech()
                        else:
                            await stream.send(item)
                    except Exception as exc:
                        failed = exc
            self._stt_send_scope = None
            if failed is not None:
                self._stt_failed(stream, failed)

    def _set_stt_stream(self, stream: STTStream | None) -> None:
        self._stt_stream = stream
        if stream is not None:
            self._stt_open.set()
            return
        if self._stt_open.is_set():
            self._stt_open = anyio.Event()
        if self._stt_send_scope is not None:
            self._stt_send_scope.cancel()

    def _drop_answered_audio(self) -> None:
        """Forget held audio of utterances that already ended: the caller was just asked
        to say it again, so a late transcript of it would answer a question twice."""
        queue = self._stt_audio
        if queue is None or None not in queue.items:
            return
        after: list[AudioChunk] = []  # what the caller said since the last end of speech
        while (item := queue.items.pop()) is not None:
            after.append(item)
        queue.items.clear()
        queue.items.extend(reversed(after))

    def _stt_failed(self, stream: STTStream, exc: BaseException) -> None:
        name = self.stt.name if self.stt is not None else "stt"
        logger.warning("STT %s failed: %r", name, exc)
        event = _StageError(name, exc, "stt").event(self._clock.now())
        self._emit(event)
        if self._stt_stream is stream:
            if self._final_owed():
                # The end of speech went to this stream, so its final never comes: the
                # turn ends now with the fallback line. It used to wait for the
                # watchdog, stt_timeout (5 s) of silence after the caller's question.
                self._final_lost(event)
            self._set_stt_stream(None)
            if self._tg is not None:
                _start(self._tg, self._close_stt, stream)

    def _final_owed(self) -> bool:
        """Whether the current stream was sent an end of speech whose final has not
        come (the marker still queued goes to the next stream, which owes it then)."""
        queue = self._stt_audio
        return self._awaiting_final and (queue is None or None not in queue.items)

    def _stt_ended(self, stream: STTStream) -> None:
        """``stream``'s transcripts ended without an error (the service closed it).

        A final still owed by it never comes: the turn ends now, as for a stream that
        failed. It used to wait for the watchdog: the caller heard nothing for
        ``stt_timeout`` (5 s), then the fallback, reported as a hung STT, and the
        watchdog's cancel closed the stream opened since, a healthy one.
        """
        assert self._ended is not None
        if self._stt_stream is not stream or self._ended.is_set() or not self._final_owed():
            return
        name = self.stt.name if self.stt is not None else "stt"
        logger.warning("STT %s: the stream ended before its final transcript", name)
        lost = ProviderError(name, "the stream ended before the final transcript")
        event = _StageError(name, lost, "stt").event(self._clock.now())
        self._emit(event)
        self._final_lost(event)

    @staticmethod
    async def _close_stt(stream: STTStream) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            try:
                await stream.close()
            except Exception as exc:
                logger.debug("closing STT stream failed: %r", exc)

    async def _stt_reader(self, stt: STT) -> None:
        """Open the call's STT stream, read transcripts; reopen it after a failure."""
        assert self._ended is not None and self._finals is not None
        while not self._ended.is_set():
            try:
                stream = await stt.stream()
            except Exception as exc:
                self._emit(_StageError(stt.name, exc, "stt").event(self._clock.now()))
                await self._clock.sleep(_STT_REOPEN_S)
                continue
            self._set_stt_stream(stream)
            try:
                # The watchdog cancels this scope when the stream hangs (no final).
                with anyio.CancelScope() as self._stt_scope:
                    async with aclosing(_closing(stream.transcripts())) as transcripts:
                        async for t in transcripts:
                            self._on_transcript(t.text, t.confidence, t.start, t.end, t.is_final)
                    self._stt_ended(stream)  # not reached when cancelled or failed
            except Exception as exc:
                self._stt_failed(stream, exc)
            finally:
                self._stt_scope = None
                if self._stt_stream is stream:
                    self._set_stt_stream(None)
                    await self._close_stt(stream)
            await self._clock.sleep(_STT_REOPEN_S)

    async def _stt_watchdog(self, stt: STT, seconds: float) -> None:
        """A final transcript must come within ``seconds`` of the end of speech.

        A hung STT (connected, never answering) would otherwise leave the caller in
        silence for good: the silence timer waits for that final (``final_grace``), then
        counts silence as if the caller had said nothing.
        """
        assert self._finals is not None
        while True:
            end = self._last_speech_end
            now = self._clock.now()
            if not self._awaiting_final or end is None:
                # Sleep until the next end of speech (no polling: 50 calls polling at
                # 10 Hz would be 500 wake-ups a second for nothing).
                self._stt_wake = anyio.Event()
                await self._stt_wake.wait()
                continue
            if now - end < seconds:
                await self._clock.sleep(end + seconds - now)
                continue
            error = _StageError(stt.name, _Expired("final transcript", seconds), "stt")
            logger.warning("STT %s hung: %s", stt.name, error.message)
            event = error.event(now)
            self._emit(event)
            self._final_lost(event)
            self._drop_answered_audio()
            if self._stt_scope is not None:
                self._stt_scope.cancel()  # the reader closes the stream and opens a new one

    def _final_lost(self, error: ProviderErrorEvent) -> None:
        """The final transcript awaited will not come: the conversation loop gets
        ``error`` instead (and speaks the fallback line); an answer paused for that
        utterance is interrupted, as the caller did speak."""
        assert self._finals is not None
        self._awaiting_final = False
        self._finals.put(error)
        pending, end = self._pending, self._last_speech_end
        if pending is not None and end is not None and pending.onset <= end:
            pending.got_final.set()  # no transcript: _decide interrupts

    def _on_transcript(
        self,
        text: str,
        confidence: float | None,
        start: float | None,
        end: float | None,
        is_final: bool,
    ) -> None:
        assert self._finals is not None
        text = text.strip()
        turn = self.turn
        # Not a final owed for an end of speech already sent (an STT that decodes a
        # whole utterance at its end, Whisper or pocketsphinx): that one's final may
        # land in the pause after the next utterance, which it does not end.
        if (
            is_final
            and text
            and not self._awaiting_final
            and turn.in_speech
            and turn.silence_ms > 0
        ):
            # The STT ended the utterance before our silence did (Deepgram's own
            # endpointing, 300 ms, against end_silence_ms' 600 or a 1.2 s hold): the
            # turn ends with it. Left open, the answer to this final played while the
            # turn detector still counted the caller as speaking, so a caller who went
            # on could not interrupt it, and its metrics took the previous turn's end.
            self._final_in_pause = turn.speech_ms
            self._last_speech_end = self._clock.now()
            turn.end_now()
        pending = self._pending
        if is_final and pending is not None and not pending.got_final.is_set():
            # The utterance that stopped the agent: _decide judges it (and queues it
            # for an answer only if it was a real interruption).
            self._awaiting_final = False
            pending.final = UserTranscriptEvent(
                text, confidence, start, end, is_final, self._clock.now()
            )
            if text:
                self._emit(pending.final)
            pending.got_final.set()
            return
        if not text:
            if is_final:
                self._awaiting_final = False
                if self._utterance_ms >= UNHEARD_MIN_SPEECH_MS:
                    # Queued, not emitted: only the conversation loop takes it (to say
                    # it did not understand); listen() and event readers never see it.
                    self._finals.put(
                        UserTranscriptEvent("", None, start, end, True, self._clock.now())
                    )
            return
        event = UserTranscriptEvent(text, confidence, start, end, is_final, self._clock.now())
        self._emit(event)
        if not is_final and self.pause_hold_ms is not None and self.turn.silence_ms > 0:
            # What was said up to this pause: is the caller done?
            if looks_unfinished(text):
                self.turn.hold(self.pause_hold_ms)
            else:
                self.turn.end_now()
        if is_final:
            self._awaiting_final = False
            self._finals.put(event)

    async def _wait_final(
        self, timeout: float | None, *, errors: bool = False, unheard: bool = False
    ) -> UserTranscriptEvent | ProviderErrorEvent | None:
        """Next final transcript; None after ``timeout`` s of caller silence.

        The timeout counts silence: it does not expire while the caller is speaking, or
        while a final transcript is still expected for speech that just ended.
        ``errors``: also return an STT timeout's error (else it is skipped); ``unheard``:
        also the empty final of speech nothing was recognised in.
        """
        if self._finals is None or self._ended is None:
            raise PipelineNotAttached("the pipeline is not attached to a call")
        finals = self._finals
        got: list[UserTranscriptEvent | ProviderErrorEvent] = []
        start = self._clock.now()
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                while (event := await finals.get()) is not None:
                    if isinstance(event, UserTranscriptEvent) and not event.text and not unheard:
                        continue
                    if errors or isinstance(event, UserTranscriptEvent):
                        got.append(event)
                        break
                tg.cancel_scope.cancel()

            async def timer(seconds: float) -> None:
                while True:
                    now = self._clock.now()
                    deadline = max(start, self._last_activity) + seconds
                    pending = (
                        self._awaiting_final
                        and self._last_speech_end is not None
                        and now - self._last_speech_end < self.final_grace
                    )
                    if now >= deadline and not self.turn.in_speech and not pending:
                        tg.cancel_scope.cancel()
                        return
                    await self._clock.sleep(max(0.02, min(deadline - now, 0.1)))

            _start(tg, take)
            if timeout is not None:
                _start(tg, timer, timeout)
        if got:
            return got[0]
        if self._ended.is_set():
            raise CallEnded(self.call_id)
        return None

    async def listen(self, timeout: float | None = None) -> UserTranscriptEvent | None:
        """The caller's next final transcript; None after ``timeout`` s of silence.

        Finals heard while nobody listens are kept (the last 16), so an answer given
        during a ``say`` is not lost. Raises CallEnded if the call hangs up.
        """
        if self.stt is None:
            raise PipelineNotConfigured("VoicePipeline.listen()", ["stt"], _pipeline_args(["stt"]))
        event = await self._wait_final(timeout)
        assert not isinstance(event, ProviderErrorEvent)
        return event

    # -- output side

    async def say(
        self, text: str, *, interruptible: bool = True, add_to_history: bool = True
    ) -> SayResult:
        """Speak ``text``; return when it has played or the caller interrupted it.

        What the caller heard is added to the agent's history as an assistant message
        (``add_to_history``), so a later LLM answer knows what was said.
        """
        if self.tts is None:
            raise PipelineNotConfigured("VoicePipeline.say()", ["tts"], _pipeline_args(["tts"]))
        return await self._say(text, self.tts, interruptible, add_to_history)

    async def _say(
        self, text: str, tts: TTS, interruptible: bool, add_to_history: bool
    ) -> SayResult:
        out = _Output(interruptible=interruptible)
        error: _StageError | None = None

        async def body(out: _Output) -> None:
            nonlocal error
            segment = _Segment(text, None)
            try:
                await self._synthesize(out, segment, None, tts)
            except _StageError as exc:
                error = exc

        result = await self._speak(out, body)
        if error is not None:
            self._emit(error.event(self._clock.now()))
            raise error.error() from error
        if add_to_history and result.heard_text:
            self.agent.history.append(ChatMessage(role="assistant", content=result.heard_text))
        return result

    async def answer(self, user: UserTranscriptEvent | str) -> TurnMetrics:
        """One turn: stream the agent's answer to ``user`` into speech, running tools.

        A provider failure ends the turn with a ProviderErrorEvent and the fallback
        text; a barge-in ends it with a BargeInEvent and the history trimmed.
        """
        if self.tts is None or self.agent.llm is None:
            missing = [n for n, p in (("llm", self.agent.llm), ("tts", self.tts)) if p is None]
            raise PipelineNotConfigured("VoicePipeline.answer()", missing, _pipeline_args(missing))
        if isinstance(user, str):
            user = UserTranscriptEvent(user, at=self._clock.now())
        metrics = TurnMetrics(speech_end=self._last_speech_end, stt_final=user.at)
        out = _Output(interruptible=True)
        error: _StageError | None = None
        agent = self.agent

        async def body(out: _Output) -> None:
            nonlocal error
            text = user.text
            for step in range(agent.max_tool_steps + 1):
                stream = agent.stream(text)
                out.messages.append(stream.message)
                try:
                    await self._stream_answer(out, stream, metrics)
                except BaseExceptionGroup as group:
                    error = _first_stage_error(group)
                    return
                now = self._clock.now()
                self._emit(AgentResponseEvent(stream.message.content, stream.tool_calls, now))
                if not stream.tool_calls:
                    return
                if step == agent.max_tool_steps:
                    logger.warning("agent stopped after %d tool steps", step)
                    return
                spoken = spoken_answer(await agent.run_tools(stream.tool_calls))
                if spoken is not None:  # the tools' answer, said as it is: no request
                    try:
                        await self._speak_text(out, spoken, metrics)
                    except _StageError as exc:
                        error = exc
                        return
                    self._emit(AgentResponseEvent(spoken, (), self._clock.now()))
                    return
                text = ""

        try:
            try:
                await self._speak(out, body)
            finally:
                agent.cancel_pending_tool_calls("interrupted" if out.interrupted else "not run")
                if out.interrupted or error is not None or out.call_ended:
                    self._trim_to_heard(out, out.played_at_stop if out.interrupted else None)
            if error is not None:
                self._emit(error.event(self._clock.now()))
                await self._say_fallback(tts_hung=error.stage == "tts" and error.timed_out)
        finally:
            metrics.interrupted = out.interrupted
            metrics.at = self._clock.now()
            self.metrics.append(metrics)
            self._emit(metrics)
        return metrics

    def _trim_to_heard(self, out: _Output, played: float | None) -> None:
        """Keep in each answer message only the sentences heard (or sent, if not cut off)."""
        for message in out.messages:
            segs = [s for s in out.segments if s.message is message]
            if played is None:
                parts = [s.text for s in segs if s.start_pos is not None]
            else:
                parts = [t for t in (s.heard(played) for s in segs) if t]
            self.agent.trim_message(message, " ".join(parts))

    async def _say_fallback(self, *, tts_hung: bool) -> None:
        """Speak ``fallback_text`` after a failed turn; with ``fallback_tts`` if TTS fails.

        A hung TTS is not asked again: that would keep the caller waiting another
        ``tts_timeout`` for audio that does not come. A TTS that raised is (the error
        may be about that one text).
        """
        text = self.fallback_text
        if not text:
            return
        if not tts_hung:
            assert self.tts is not None
            try:
                await self._say(text, self.tts, True, True)
                return
            except ProviderError as exc:
                logger.warning("could not speak the fallback: %s", exc)
        if self.fallback_tts is not None:
            try:
                await self._say(text, self.fallback_tts, True, True)
            except ProviderError as exc:
                logger.warning("the fallback TTS failed too: %s", exc)

    async def _say_quietly(self, text: str) -> None:
        """Say something the pipeline itself chose; a TTS failure is reported, not raised."""
        try:
            await self.say(text)
        except ProviderError as exc:
            logger.warning("could not speak %r: %s", text, exc)

    async def _speak(self, out: _Output, body: Callable[[_Output], Awaitable[None]]) -> SayResult:
        """Run ``body`` as the current output, wait for playout; report what was heard."""
        media, ended, lock = self._media, self._ended, self._speak_lock
        if media is None or ended is None or lock is None:
            raise PipelineNotAttached("the pipeline is not attached to a call")
        if ended.is_set():
            raise CallEnded(self.call_id)
        async with lock:
            self._output = out
            try:
                with out.scope:
                    async with anyio.create_task_group() as tg:

                        async def watch_hangup() -> None:
                            await ended.wait()
                            out.call_ended = True
                            out.scope.cancel()

                        _start(tg, watch_hangup)
                        await body(out)
                        await self._wait_playout(out, media)
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                if _call_ended(group) is None:
                    raise
                out.call_ended = True  # the media closed under a send: same as a hang-up
            finally:
                self._output = None
        if out.call_ended and not out.interrupted:
            raise CallEnded(self.call_id)
        if out.interrupted:
            played = out.played_at_stop if out.played_at_stop is not None else media.played_ms
            heard = out.heard_text(played)
            played_ms = out.played_ms(played)
            self._emit(BargeInEvent(heard, played_ms, out.stopped_at))
            return SayResult(True, heard, played_ms)
        played_ms = out.end_pos - out.start_pos if out.audio_started else 0.0
        return SayResult(False, out.heard_text(out.end_pos), played_ms)

    async def _wait_playout(self, out: _Output, media: MediaIO) -> None:
        # Sleep until the audio should have played out, then look again (it runs late
        # when ticks are late), rather than every 20 ms: that poll was 50 wake-ups a
        # second per talking agent (3,700 in 6 s at 46 agent calls). A barge-in or a
        # hang-up cancels the sleep (the output's scope).
        while out.paused_at is not None or (
            out.audio_started and media.queued_ms > 0 and media.played_ms < out.end_pos - 1e-6
        ):
            if out.paused_at is not None:
                await self._clock.sleep(0.02)  # held for a caller onset: _decide settles it
                continue
            left_ms = min(out.end_pos - media.played_ms, media.queued_ms)
            await self._clock.sleep(max(0.02, left_ms / 1000.0))

    async def _within(self, seconds: float | None, what: str, step: Awaitable[T]) -> T:
        """Await one answer from a provider for at most ``seconds`` (pipeline clock).

        Every wait on a provider goes through here: a provider that accepted the request
        and then never answers raises ``_Expired`` instead of holding the turn forever.
        The deadline runs on the pipeline's clock, so virtual-time tests see it too.
        """
        if seconds is None:
            return await step
        if type(self._clock) is MonotonicClock:
            # Real time: a deadline cancel scope on the event loop's clock, not a timer
            # task in a task group. Measured (bench/agent_density.py, 20,000 waits apart):
            # 6.7 us a wait against 53 us, and at 46 agent calls 7,625 -> 5,268 us of
            # CPU per call-second; there are ~66 such waits per call-second (each LLM
            # token, each TTS chunk). A virtual clock keeps the timer task below.
            with anyio.move_on_after(seconds):
                return await step
            raise _Expired(what, seconds)
        done: list[T] = []
        failed: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def expire() -> None:
                await self._clock.sleep(seconds)
                tg.cancel_scope.cancel()

            _start(tg, expire)
            try:
                done.append(await step)
            except Exception as exc:  # StopAsyncIteration too: a task group would wrap it
                failed.append(exc)
            tg.cancel_scope.cancel()
        if failed:
            raise failed.pop()  # (not held by this frame once raised: no cycle)
        if not done:
            raise _Expired(what, seconds)
        return done[0]

    async def _speak_text(self, out: _Output, text: str, metrics: TurnMetrics) -> None:
        """Say ``text`` as the answer's next message (a tool's :class:`Speak` result),
        sentence by sentence, into the history like a streamed answer."""
        message = ChatMessage(role="assistant", content=text)
        self.agent.history.append(message)
        out.messages.append(message)
        if metrics.llm_first_token is None:  # no text came before: this is the agent's first
            metrics.llm_first_token = self._clock.now()
        chunker = SentenceChunker(min_comma_chars=self.min_comma_chars)
        for piece in [*chunker.push(text), *chunker.flush()]:
            await self._synthesize(out, _Segment(piece, message), metrics)

    async def _stream_answer(self, out: _Output, stream: AgentStream, metrics: TurnMetrics) -> None:
        """LLM -> chunker -> (bounded queue) -> TTS -> media, both stages concurrently."""
        send, receive = anyio.create_memory_object_stream[_Segment](self.sentence_queue)
        self._sentences = send
        llm_name = self.agent.llm.name if self.agent.llm is not None else "llm"

        async def produce() -> None:
            chunker = SentenceChunker(min_comma_chars=self.min_comma_chars)
            async with send, aclosing(stream.__aiter__()) as deltas:
                while True:
                    try:
                        delta = await self._within(self.llm_timeout, "token", deltas.__anext__())
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        raise _StageError(llm_name, exc, "llm") from exc
                    if metrics.llm_first_token is None:
                        metrics.llm_first_token = self._clock.now()
                    for piece in chunker.push(delta):
                        await send.send(_Segment(piece, stream.message))
                for piece in chunker.flush():
                    await send.send(_Segment(piece, stream.message))

        async def consume() -> None:
            async with receive:
                async for segment in receive:
                    await self._synthesize(out, segment, metrics)

        try:
            async with anyio.create_task_group() as tg:
                _start(tg, produce)
                _start(tg, consume)
        except BaseExceptionGroup as group:
            if _call_ended(group) is None:
                raise
            # Not a provider failure: no fallback to speak. (Not bound to a local,
            # which this frame would hold once its traceback holds the frame.)
            raise _call_ended(group) or CallEnded(self.call_id) from None
        finally:
            self._sentences = None

    async def _synthesize(
        self, out: _Output, segment: _Segment, metrics: TurnMetrics | None, tts: TTS | None = None
    ) -> None:
        """TTS one sentence straight into the transport, tracking its playout position."""
        tts, media = tts or self.tts, self._media
        assert tts is not None and media is not None
        out.segments.append(segment)
        async with aclosing(_closing(tts.synthesize(segment.text))) as audio:
            while True:
                try:
                    chunk = await self._within(self.tts_timeout, "audio", audio.__anext__())
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise _StageError(tts.name, exc, "tts") from exc
                if not chunk.data:
                    continue
                if metrics is not None and metrics.tts_first_byte is None:
                    metrics.tts_first_byte = self._clock.now()
                while out.paused_at is not None:
                    await out.resume.wait()  # the caller spoke: hold until decided
                await media.send(chunk)
                end = media.played_ms + media.queued_ms
                out.sent.append((end - chunk.duration_ms, end, chunk))
                while out.sent and out.sent[0][1] < media.played_ms:
                    out.sent.popleft()
                self._note_levels(chunk, end)
                if segment.start_pos is None:
                    segment.start_pos = end - chunk.duration_ms
                    if metrics is not None and metrics.first_frame_out is None:
                        metrics.first_frame_out = self._clock.now()
                segment.end_pos = end
                segment.audio_ms += chunk.duration_ms
        segment.complete = True
