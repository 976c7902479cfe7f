"""Answering-machine detection: who picked up an outbound call, and the beep after it.

``app.originate(endpoint, amd=True)`` has Asterisk's own detector decide first:
the answered call leaves the app for a dialplan step (the ``voxtra-amd`` context of the
shipped ``asterisk-conf/extensions.conf``: ``AMD()`` then back into ``Stasis``, with
``AMDSTATUS`` and ``AMDCAUSE``), and comes back with a verdict. :func:`detect` does
that round trip. The call's ``call.amd`` is then an :class:`AmdResult`: ``verdict``
(``human``, ``machine``, ``unknown``) and ``reasons`` (Asterisk's, then the
framework's).

Then the framework listens itself (:class:`GreetingListener`, over the call's audio):

- when AMD is not sure (``NOTSURE``: it ran out of analysis time), for up to
  ``AmdConfig.listen`` seconds: a beep means a machine; a greeting that goes on past
  ``long_greeting_ms`` of speech means a machine; a short utterance followed by
  ``after_greeting_silence_ms`` of silence means a person;
- ``call.wait_for_beep()`` waits for the beep a voicemail box plays before it records
  (a steady tone, :mod:`voxtra.media.tones`), so a handler can leave its message
  after it (voicemail drop). A beep heard turns a ``human`` verdict into ``machine``.

Asterisk's dialplan step needs app_amd loaded and the ``voxtra-amd`` context (copy it
from ``asterisk-conf/extensions.conf`` into your dialplan; ``AmdConfig.context`` names
another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriError
from voxtra.ari.models import Channel
from voxtra.calls.registry import CallRegistry, PendingOriginate
from voxtra.errors import CallFailed, VoxtraError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.tones import Tone, ToneDetector, pcm16_samples

__all__ = [
    "AMD_APP_VARIABLE",
    "AMD_ARGS_VARIABLE",
    "AmdConfig",
    "AmdError",
    "AmdResult",
    "AmdVerdict",
    "GreetingListener",
    "detect",
    "refine",
    "wait_for_beep",
]

logger = logging.getLogger(__name__)

AMD_APP_VARIABLE = "VOXTRA_AMD_APP"
"""Channel variable naming the Stasis app the dialplan step returns the call to."""
AMD_ARGS_VARIABLE = "VOXTRA_AMD_ARGS"
"""Channel variable holding ``AMD()``'s arguments (empty: amd.conf's values)."""
RATE = 8000


class AmdError(VoxtraError):
    """Answering-machine detection could not run (the dialplan step did not bring the
    call back: app_amd not loaded, the context missing, or a bad option)."""


class AmdVerdict(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class AmdConfig:
    """Options of ``originate(..., amd=AmdConfig(...))`` (``amd=True``: these defaults).

    The ``*_ms`` fields up to ``max_word_ms`` are ``AMD()``'s own arguments (None:
    the value in Asterisk's amd.conf); see Asterisk's ``core show application AMD``.
    """

    context: str = "voxtra-amd"
    """The dialplan context of the AMD step (extension ``extension``, priority 1)."""
    extension: str = "s"
    timeout: float = 15.0
    """Seconds the AMD step may take before :class:`AmdError` (AMD itself stops after
    ``total_analysis_ms``, 5 s by default)."""
    initial_silence_ms: int | None = None
    greeting_ms: int | None = None
    after_greeting_silence_ms: int | None = None
    total_analysis_ms: int | None = None
    min_word_ms: int | None = None
    between_words_silence_ms: int | None = None
    max_words: int | None = None
    silence_threshold: int | None = None
    max_word_ms: int | None = None
    listen: float = 4.0
    """Seconds the framework listens when AMD is not sure (0: it does not)."""
    long_greeting_ms: float = 2500.0
    """Speech heard by the framework at least this long: a recorded greeting."""
    human_silence_ms: float = 800.0
    """Silence after a short utterance that makes the framework say ``human``."""
    speech_dbfs: float = -40.0
    """Frames louder than this count as speech for the greeting's length."""

    def dialplan_args(self) -> str:
        """``AMD()``'s positional arguments, empty where amd.conf decides."""
        values = [
            self.initial_silence_ms,
            self.greeting_ms,
            self.after_greeting_silence_ms,
            self.total_analysis_ms,
            self.min_word_ms,
            self.between_words_silence_ms,
            self.max_words,
            self.silence_threshold,
            self.max_word_ms,
        ]
        for value in values:
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                raise AmdError(f"AMD options are whole numbers >= 0, got {value!r}")
        while values and values[-1] is None:
            values.pop()
        return ",".join("" if v is None else str(int(v)) for v in values)

    def variables(self, app_name: str) -> dict[str, str]:
        """The channel variables the dialplan step reads."""
        return {AMD_APP_VARIABLE: app_name, AMD_ARGS_VARIABLE: self.dialplan_args()}


@dataclass(frozen=True)
class AmdResult:
    """Who answered: ``verdict`` and why (``reasons``, Asterisk's first)."""

    verdict: AmdVerdict
    status: str = ""
    """Asterisk's ``AMDSTATUS``: MACHINE, HUMAN, NOTSURE or HANGUP."""
    cause: str = ""
    """Asterisk's ``AMDCAUSE``, e.g. ``MAXWORDS-3-2``, ``HUMAN-800-800``, ``TOOLONG-5000``."""
    reasons: tuple[str, ...] = ()
    greeting_ms: float | None = None
    """Speech the framework heard (when it listened)."""
    beep: Tone | None = None
    """The beep heard, if any."""

    @classmethod
    def from_asterisk(cls, status: str, cause: str) -> AmdResult:
        status = status.strip().upper()
        verdict = {"HUMAN": AmdVerdict.HUMAN, "MACHINE": AmdVerdict.MACHINE}.get(
            status, AmdVerdict.UNKNOWN
        )
        return cls(verdict, status, cause, (f"asterisk AMD: {status or 'no status'} ({cause})",))

    def heard(self, verdict: AmdVerdict, reason: str, **changes: object) -> AmdResult:
        """This result refined by what the framework heard."""
        return replace(self, verdict=verdict, reasons=(*self.reasons, reason), **changes)  # type: ignore[arg-type]


@dataclass
class GreetingListener:
    """What the far end sounds like, frame by frame (sans-IO): speech, silence, a beep."""

    speech_dbfs: float = -40.0
    detector: ToneDetector = field(default_factory=lambda: ToneDetector(RATE))
    heard_ms: float = 0.0
    speech_ms: float = 0.0
    silence_after_ms: float = 0.0
    """Silence since the last speech frame (0 while nobody spoke yet)."""
    beep: Tone | None = None

    def feed(self, samples: npt.NDArray[np.float64]) -> Tone | None:
        frame_ms = 1000.0 * len(samples) / RATE
        self.heard_ms += frame_ms
        tone = self.detector.feed(samples)
        mean_square = float(np.mean(samples * samples)) if len(samples) else 0.0
        level = 10.0 * np.log10(mean_square) if mean_square > 1e-10 else -100.0
        in_tone = self.detector.last_freq is not None
        if level >= self.speech_dbfs and not in_tone:
            self.speech_ms += frame_ms
            self.silence_after_ms = 0.0
        elif self.speech_ms > 0:
            self.silence_after_ms += frame_ms
        if tone is not None:
            self.beep = tone
        return tone


async def detect(
    ari: AriClient,
    registry: CallRegistry[Any],
    channel_id: str,
    endpoint: str,
    config: AmdConfig,
) -> tuple[Channel, AmdResult]:
    """Send the answered ``channel_id`` through the AMD dialplan step and wait until it
    is back in the app; the channel and Asterisk's verdict. The channel was originated
    with :meth:`AmdConfig.variables`. On failure it is hung up and AmdError raised."""
    back = PendingOriginate(endpoint)
    registry.originates[channel_id] = back
    try:
        try:
            await ari.channels.continue_in_dialplan(
                channel_id, context=config.context, extension=config.extension, priority=1
            )
            channel = await asyncio.wait_for(asyncio.shield(back.future), config.timeout)
            status = await ari.channels.get_variable(channel_id, "AMDSTATUS")
            cause = await ari.channels.get_variable(channel_id, "AMDCAUSE")
        except TimeoutError:
            raise AmdError(
                f"{endpoint}: the AMD step ({config.extension}@{config.context}) did not bring "
                f"the call back within {config.timeout} s (is app_amd loaded and the "
                "context in the dialplan?)"
            ) from None
        except AriError as exc:
            raise AmdError(f"{endpoint}: the AMD step failed: {exc}") from exc
        except CallFailed as exc:
            # The far end hung up inside the step: said as that (it read "call failed
            # (cause 0: Unknown)" on SIP, as if the call had never been answered).
            raise CallFailed(
                endpoint,
                exc.cause,
                exc.cause_txt,
                "answered, then hung up during answering-machine detection",
            ) from None
    except BaseException:
        with contextlib.suppress(AriError):
            await ari.channels.hangup(channel_id)
        raise
    finally:
        if registry.originates.get(channel_id) is back:
            del registry.originates[channel_id]
    result = AmdResult.from_asterisk(str(status), str(cause))
    logger.info("call %s: AMD says %s (%s)", channel_id, result.status, result.cause)
    return channel, result


@contextlib.asynccontextmanager
async def _closing(frames: AsyncIterator[AudioChunk]) -> AsyncIterator[None]:
    """Close ``frames`` (an async generator: the call's audio stream) when done, so the
    next reader of the call's audio is not left behind a suspended one."""
    try:
        yield
    finally:
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()


async def _pcm_frames(frames: AsyncIterator[AudioChunk]) -> AsyncIterator[npt.NDArray[np.float64]]:
    async for chunk in frames:
        if chunk.codec is not Codec.PCM16 or chunk.sample_rate != RATE:
            raise AmdError("AMD listens to PCM16 at 8 kHz frames")
        yield pcm16_samples(chunk.data)


async def refine(
    frames: AsyncIterator[AudioChunk], result: AmdResult, config: AmdConfig
) -> AmdResult:
    """Listen to the far end (``frames``: PCM16 8 kHz) for up to ``config.listen``
    seconds and decide what AMD could not. The iterator is closed at the end."""
    listener = GreetingListener(config.speech_dbfs)

    def verdict() -> AmdResult | None:
        if listener.beep is not None:
            beep = listener.beep
            return result.heard(
                AmdVerdict.MACHINE,
                f"beep heard ({beep.freq:.0f} Hz, {beep.duration_ms:.0f} ms)",
                beep=beep,
                greeting_ms=listener.speech_ms,
            )
        if listener.speech_ms >= config.long_greeting_ms:
            return result.heard(
                AmdVerdict.MACHINE,
                f"greeting of {listener.speech_ms / 1000:.1f} s",
                greeting_ms=listener.speech_ms,
            )
        if listener.speech_ms > 0 and listener.silence_after_ms >= config.human_silence_ms:
            return result.heard(
                AmdVerdict.HUMAN,
                f"{listener.speech_ms / 1000:.1f} s of speech, then "
                f"{listener.silence_after_ms / 1000:.1f} s of silence",
                greeting_ms=listener.speech_ms,
            )
        return None

    async with _closing(frames):
        try:
            async with asyncio.timeout(config.listen):
                async for samples in _pcm_frames(frames):
                    listener.feed(samples)
                    decided = verdict()
                    if decided is not None:
                        return decided
        except TimeoutError:
            pass
    return result.heard(
        result.verdict,
        f"framework: undecided after {listener.heard_ms / 1000:.1f} s "
        f"({listener.speech_ms / 1000:.1f} s of speech)",
        greeting_ms=listener.speech_ms,
    )


async def wait_for_beep(frames: AsyncIterator[AudioChunk], timeout: float | None) -> Tone | None:
    """The next beep in ``frames`` (PCM16 8 kHz), once it has ended; None after
    ``timeout`` seconds. The iterator is closed at the end."""
    detector = ToneDetector(RATE)
    async with _closing(frames):
        try:
            async with asyncio.timeout(timeout):
                async for samples in _pcm_frames(frames):
                    tone = detector.feed(samples)
                    if tone is not None:
                        return tone
        except TimeoutError:
            return None
    return None
