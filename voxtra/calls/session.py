"""CallSession: the user's handle on one call, a facade over its CallContext.

The session holds no state of its own: the call's state, event waiters and everything
it owns are in its :class:`~voxtra.calls.context.CallContext` (``call.context``); the
audio path, recorder and voice are features that take that context. Every wait a
session performs (answer, playback, DTMF, recording) ends promptly with
:class:`~voxtra.errors.CallEnded` when the caller hangs up, instead of running into its
timeout.

Lifecycle rule: when the route handler returns, the call is hung up, unless it was
transferred (``transfer_to``, ``transfer_to_queue``) or handed to a bridge
(``bridge_with``), in which case it lives on until a party hangs up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, TypeVar

from voxtra._callbacks import check_callback
from voxtra.ari.events import AriEvent
from voxtra.ari.models import Channel
from voxtra.calls import amd as amd_detection
from voxtra.calls.amd import AmdConfig, AmdResult, AmdVerdict
from voxtra.calls.asterisk import AsteriskControl
from voxtra.calls.context import CallContext
from voxtra.calls.control import CallControl, RecordOptions
from voxtra.calls.dial import DialResult, TransferKeys, dial
from voxtra.calls.host import CallHost
from voxtra.calls.media import CallMedia
from voxtra.calls.parties import AgentMode, CallParties, PartyError, PartyState
from voxtra.calls.playback import Playback
from voxtra.calls.recorder import CallRecorder
from voxtra.calls.secure import SecureInput
from voxtra.calls.state import DTMF_KEYS, CallDirection, CallEndReason, CallState
from voxtra.calls.voice import CallVoice, VoiceConfig
from voxtra.errors import CallEnded, ConfigError, PipelineNotConfigured
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.tones import Tone
from voxtra.media.transport import MediaTransport
from voxtra.pipeline.agent import Agent
from voxtra.pipeline.engine import ConversationEngine
from voxtra.pipeline.events import SayResult, UserTranscriptEvent
from voxtra.pipeline.pipeline import EndReason, VoicePipeline
from voxtra.recording.app_recordings import RecordingResult
from voxtra.recording.sinks import RecordingSink

__all__ = ["CallSession"]

E = TypeVar("E", bound=AriEvent)
T = TypeVar("T")
HangupCallback = Callable[["CallSession"], Awaitable[None]]
Briefing = Callable[["CallSession"], Awaitable[bool | None]]


_DTMF_CHARACTERS = DTMF_KEYS | frozenset("abcdwWfF")
"""What Asterisk's DTMF stream sends: digits, ``*#``, ``A-D``, pauses ``w``/``W``, flash ``f``."""


class CallSession:
    """One call in the Stasis application (a facade over its :class:`CallContext`)."""

    def __init__(
        self,
        host: CallHost,
        channel: Channel,
        *,
        direction: CallDirection = CallDirection.INBOUND,
        args: tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
        called_number: str | None = None,
        voice: VoiceConfig | None = None,
        control: Callable[[CallContext], CallControl] | None = None,
    ) -> None:
        self.context = CallContext(
            host,
            channel,
            direction=direction,
            args=args,
            metadata=metadata,
            called_number=called_number,
        )
        """The call's kernel: state, waiters, what it owns, its task group."""
        self.app = host
        """The app running the call (a :class:`~voxtra.VoxtraApp`)."""
        self.voice_config: VoiceConfig = voice if voice is not None else VoiceConfig()
        """Providers and options for say/listen/agent; change before first use."""
        self.media_path = CallMedia(self.context, host.settings.media)
        """The call's audio path on Asterisk (bridge, ExternalMedia channel, transport)."""
        self.control: CallControl = (
            AsteriskControl(self.context, self.media_path)
            if control is None
            else control(self.context)
        )
        """The telephony backend's control of the call (``control(context)`` builds
        another backend's; Asterisk ARI by default): see :mod:`voxtra.calls.control`."""
        self.context.control = self.control
        self.voice: CallVoice | None = None
        """The call's voice pipeline holder, made on first use of speech."""
        self.parties = CallParties(self.context, self.media_path)
        """The three-party state (callee, agent mode): see :meth:`connect`."""
        # The recording's name through the control, not a method of the session: a
        # bound method would make session -> secure -> session a reference cycle.
        self.secure = SecureInput(self.context, recording=partial(_recording_name, self.control))
        """Secure DTMF capture (:meth:`secure_input`): whether it is on, what it holds."""
        self.amd: AmdResult | None = None
        """Who answered an ``originate(..., amd=True)`` call (``verdict``, ``reasons``)."""

    @property
    def backend(self) -> str:
        """The telephony backend the call is on: ``"asterisk"`` or ``"twilio"``."""
        return self.control.backend

    @property
    def recorder(self) -> CallRecorder | None:
        """The call's Asterisk recorder, made on first use of recording (None before,
        and on another backend)."""
        return self.control.recorder if isinstance(self.control, AsteriskControl) else None

    def __repr__(self) -> str:
        return f"<CallSession {self.id} {self.direction} {self.state} caller={self.caller_id!r}>"

    # -- facts (the context's) ---------------------------------------------------------

    @property
    def id(self) -> str:
        return self.context.id

    @property
    def channel(self) -> Channel:
        """The channel as Asterisk last described it."""
        return self.context.channel

    @property
    def app_name(self) -> str:
        return self.app.app_name

    @property
    def direction(self) -> CallDirection:
        return self.context.direction

    @property
    def args(self) -> tuple[str, ...]:
        """The Stasis application arguments the call arrived with."""
        return self.context.args

    @property
    def caller_id(self) -> str:
        return self.context.caller_id

    @property
    def caller_name(self) -> str:
        return self.context.caller_name

    @property
    def called_number(self) -> str:
        """The number the caller dialled: the same as the ``CallInfo.called_number``
        its route matched (an outbound call: the endpoint's number)."""
        return self.context.called_number

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form data: the matched route's metadata, then the handler's own."""
        return self.context.metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self.context.metadata = value

    @property
    def state(self) -> CallState:
        return self.context.state

    @state.setter
    def state(self, value: CallState) -> None:
        self.context.state = value

    @property
    def end_reason(self) -> CallEndReason | None:
        """Why the call ended (set by whichever cause came first); None while live."""
        return self.context.end_reason

    @property
    def hangup_cause(self) -> int | None:
        """Asterisk's hangup cause (Q.850), once the channel is destroyed."""
        return self.context.hangup_cause

    @property
    def transferred(self) -> bool:
        return self.context.transferred

    @property
    def handed_off(self) -> bool:
        """True once the call was handed to a bridge: its handler may return without
        the call being hung up."""
        return self.context.handed_off

    @handed_off.setter
    def handed_off(self, value: bool) -> None:
        self.context.handed_off = value

    @property
    def created_at(self) -> float:
        return self.context.created_at

    @property
    def dtmf_dropped(self) -> int:
        """Digits dropped because 64 were already waiting unread."""
        return self.context.dtmf_dropped

    @property
    def duration(self) -> float:
        """Seconds since the call was answered; 0 before."""
        return self.context.duration

    @property
    def ended(self) -> bool:
        return self.context.ended

    async def wait_ended(self, timeout: float | None = None) -> None:
        await self.context.wait_ended(timeout)

    # -- call control ----------------------------------------------------------------

    async def answer(self) -> None:
        """Answer the call (no-op when already answered)."""
        context = self.context
        context.check_alive()
        if context.state is CallState.RINGING or context.answered_at is None:
            await self.control.answer()
        if self.app.settings.media.attach_on_answer:
            await self.media()

    async def hangup(self, reason: str = "normal") -> None:
        """Hang up. Idempotent: hanging up an ended call does nothing."""
        await self.context.hangup(reason)

    async def ring(self) -> None:
        self.context.check_alive()
        await self.control.ring()

    async def hold(self, moh_class: str | None = None) -> None:
        """Put the caller on hold with music on hold: the class ``moh_class`` of
        Asterisk's ``musiconhold.conf`` (None: the channel's music class, normally
        ``default``).

        A class Asterisk does not have raises nothing: Asterisk 22 answers 204 and plays
        the ``default`` class instead (the same audio, recorded on the sandbox), and ARI
        cannot list the classes, so Voxtra cannot tell. ``asterisk -rx "moh show
        classes"`` lists them.
        """
        self.context.check_alive()
        await self.control.hold(moh_class)

    async def unhold(self) -> None:
        self.context.check_alive()
        await self.control.unhold()

    async def mute(self, direction: str = "in") -> None:
        """Mute what the caller says (``in``), hears (``out``), or both."""
        self.context.check_alive()
        await self.control.mute(direction)

    async def unmute(self, direction: str = "in") -> None:
        self.context.check_alive()
        await self.control.unmute(direction)

    async def get_variable(self, name: str) -> str:
        """The value of the channel variable (or dialplan function, ``CHANNEL(state)``)
        ``name``; :class:`~voxtra.errors.VariableNotSet` if the channel has no such
        variable, a ``ConfigError`` for an empty name."""
        _check_variable_name("get_variable", name)
        self.context.check_alive()
        return await self.control.get_variable(name)

    async def set_variable(self, name: str, value: str) -> None:
        """Set the channel variable ``name`` (or write a dialplan function,
        ``CHANNEL(language)``) to ``value``.

        An empty name is a ``ConfigError`` before anything is sent (Asterisk 22 answers
        it 400 "Variable name is required"). Asterisk takes any other name (204), spaces
        and punctuation included, as measured on the sandbox; but a function write it
        cannot do (a misspelt function, an unknown item) is passed over without an
        error: read it back to be sure. A leading ``_`` or ``__`` (inherited by the
        channels this one creates) is not part of the name: ``get_variable("X")``.
        """
        _check_variable_name("set_variable", name)
        self.context.check_alive()
        await self.control.set_variable(name, value)

    # -- playback --------------------------------------------------------------------

    async def play_file(self, name: str | Sequence[str], *, lang: str | None = None) -> Playback:
        """Start playing a sound (``sound:`` prefix optional) and return its handle.

        A list plays its sounds back to back as one playback (finished after the last).
        """
        names = [name] if isinstance(name, str) else list(name)
        self.context.check_alive()
        playback: Playback = await self.control.play(names, lang=lang)
        return playback

    async def play_and_wait(self, name: str, timeout: float | None = None) -> None:
        playback = await self.play_file(name)
        await playback.wait(timeout)

    # -- DTMF ------------------------------------------------------------------------

    async def listen_dtmf(self, timeout: float | None = None) -> str | None:
        """The next DTMF digit the caller presses, or None after ``timeout`` seconds."""
        return await self.context.next_digit(timeout)

    def clear_dtmf(self) -> None:
        """Forget digits pressed before now (e.g. before a new menu prompt)."""
        self.context.clear_digits()

    async def gather(
        self,
        max_digits: int = 1,
        *,
        terminator: str | None = "#",
        first_digit_timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
    ) -> str:
        """Collect up to ``max_digits`` digits (a menu choice, a PIN).

        Stops at ``terminator`` (not included), at ``max_digits``, or when a timeout
        passes; returns what was collected so far (possibly ""). ``terminator``: one
        key (``0-9``, ``*``, ``#``, ``A-D``), or None (or "") for none.
        """
        if max_digits < 1:
            raise ConfigError(f"gather(): max_digits must be at least 1, not {max_digits}")
        if terminator and (len(terminator) != 1 or terminator not in DTMF_KEYS):
            raise ConfigError(
                f"gather(): terminator {terminator!r} is not a key (0-9, *, #, A-D) or None"
            )
        if not (first_digit_timeout > 0 and inter_digit_timeout > 0):
            raise ConfigError(
                f"gather(): the timeouts must be positive seconds, not {first_digit_timeout} "
                f"and {inter_digit_timeout}"
            )
        digits = ""
        timeout = first_digit_timeout
        while len(digits) < max_digits:
            digit = await self.listen_dtmf(timeout=timeout)
            if digit is None or (terminator and digit == terminator):
                break
            digits += digit
            timeout = inter_digit_timeout
        if self.secure.active:
            engine = self.voice.engine if self.voice is not None else None
            agent = getattr(engine, "agent", None)
            self.secure.captured(digits, agent if isinstance(agent, Agent) else None)
        return digits

    def secure_input(self, *, mute: bool = True) -> AbstractAsyncContextManager[SecureInput]:
        """``async with call.secure_input(): digits = await call.gather(16)``: a card
        number or PIN that reaches only this code.

        Inside, the running recording is paused, the caller's audio is muted in
        Asterisk (``mute=False`` keeps it: then the pipeline may hear in-band tones),
        the call's DTMF events reach other waiters with the digit replaced by
        ``[redacted]``, and what :meth:`gather` returns is kept out of the agent's
        history. See :mod:`voxtra.calls.secure`; raises
        :class:`~voxtra.calls.secure.SecureInputError` if Asterisk refuses.
        """
        self.control.require("secure_input()")
        return self.secure.session(mute=mute)

    async def send_dtmf(
        self, digits: str, *, duration_ms: int = 100, between_ms: int = 100
    ) -> None:
        """Send DTMF to the caller (RFC 4733 on SIP): ``0-9``, ``*``, ``#``, ``A-D``;
        ``w`` and ``W`` pause half a second and a second, ``f`` flashes the hook.

        Anything else is a ConfigError before a digit goes: Asterisk 22 answers 204 to
        any string and passes over a character it cannot send with a warning in its
        own log (checked on the sandbox), so a typo was lost silently.
        """
        if not digits:
            raise ConfigError("send_dtmf() needs at least one digit")
        wrong = sorted(set(digits) - _DTMF_CHARACTERS)
        if wrong:
            raise ConfigError(
                f"send_dtmf({digits!r}): {''.join(wrong)!r} cannot be sent as DTMF "
                "(0-9, *, #, A-D; w and W pause, f flashes)"
            )
        if duration_ms < 0 or between_ms < 0:
            raise ConfigError(
                f"send_dtmf(): duration_ms ({duration_ms}) and between_ms ({between_ms}) "
                "cannot be negative"
            )
        self.context.check_alive()
        await self.control.send_dtmf(digits, duration_ms=duration_ms, between_ms=between_ms)

    async def dtmf_digits(self) -> AsyncIterator[str]:
        """Every digit the caller presses, until the call ends."""
        while True:
            try:
                digit = await self.listen_dtmf()
            except CallEnded:
                return
            if digit is not None:
                yield digit

    # -- audio -------------------------------------------------------------------------

    async def media(self) -> MediaTransport:
        """The call's media transport (ExternalMedia), attached on first use."""
        self._check_agent_present()
        return await self.control.media()

    def _check_agent_present(self) -> None:
        if self.parties.state is PartyState.CLOSED:
            raise PartyError("the agent has left this call (close()): no audio for it")

    async def audio_stream(
        self, *, codec: Codec | str = Codec.ULAW, sample_rate: int = 8000
    ) -> AsyncIterator[AudioChunk]:
        """The caller's audio as 20 ms chunks, until the call ends.

        mu-law 8 kHz by default; ``codec="pcm16"`` with a ``sample_rate`` gives PCM at
        that rate. One consumer at a time: frames are not duplicated between readers.
        """
        transport = await self.media()
        converter = ChunkConverter(Codec(codec), sample_rate)  # validates the request
        # The transport converts as frames arrive (RTP: for all calls in one batch per
        # tick); the converter only handles frames queued before the switch.
        restore = transport.inbound_format
        transport.set_inbound_format(converter.codec, converter.rate)
        try:
            async for frame in transport.frames():
                chunk = converter.convert(frame)
                if chunk.data:
                    yield chunk
        finally:
            # Closed, the next reader gets what it had (after AMD's listening or
            # wait_for_beep(), call.media()'s frames stayed PCM16 at 8 kHz).
            transport.set_inbound_format(*restore)

    async def wait_for_beep(self, timeout: float | None = 30.0) -> Tone | None:
        """Until a voicemail box's beep has ended (then leave the message); None after
        ``timeout`` seconds without one. Listens through :meth:`audio_stream` (not
        while the voice pipeline does). A beep already heard by the AMD refinement is
        returned at once; a beep after a ``human`` verdict turns it into ``machine``.
        """
        if self.amd is not None and self.amd.beep is not None:
            return self.amd.beep
        tone = await amd_detection.wait_for_beep(
            self.audio_stream(codec=Codec.PCM16, sample_rate=8000), timeout
        )
        if tone is not None and self.amd is not None:
            self.amd = self.amd.heard(
                AmdVerdict.MACHINE,
                f"beep heard ({tone.freq:.0f} Hz, {tone.duration_ms:.0f} ms)",
                beep=tone,
            )
        return tone

    async def refine_amd(self, config: AmdConfig | None = None) -> AmdResult | None:
        """Listen to the far end and decide what Asterisk's AMD could not (a beep, a
        long greeting, a short "hello?" then silence); ``originate(amd=True)`` does this
        by itself when AMD says NOTSURE. Returns the updated :attr:`amd`."""
        if self.amd is None:
            return None
        self.amd = await amd_detection.refine(
            self.audio_stream(codec=Codec.PCM16, sample_rate=8000),
            self.amd,
            config or AmdConfig(),
        )
        return self.amd

    async def party_audio(
        self, *, codec: Codec | str = Codec.ULAW, sample_rate: int = 8000
    ) -> AsyncIterator[tuple[str, AudioChunk]]:
        """After :meth:`connect`: each party's own voice, labelled ``"caller"`` or
        ``"callee"``, as ``(label, chunk)`` pairs, until the callee leaves, the agent
        closes, or the call ends (:meth:`audio_stream` gives both mixed)."""
        self.control.require("party_audio()")
        async for item in self.parties.party_audio(Codec(codec), sample_rate):
            yield item

    async def send_audio(self, chunk: AudioChunk) -> None:
        """Play audio to the caller: any length, codec and rate; paced in 20 ms frames."""
        transport = await self.media()
        await transport.send(chunk)

    async def flush_audio(self) -> None:
        """Drop audio queued for the caller (barge-in): playback stops within a frame."""
        transport = self.control.transport
        if transport is not None:
            await transport.flush()

    # -- recording -------------------------------------------------------------------

    async def record_start(
        self,
        name: str = "",
        fmt: str = "wav",
        *,
        sink: RecordingSink | None = None,
        beep: bool = False,
        max_duration: int | None = None,
        max_silence: int | None = None,
        finish_on_key: str | None = None,
    ) -> str:
        """Start recording the call (a snoop on the caller: both directions); returns the name.

        Without ``name`` a unique, safe one is generated. The finished file is fetched
        over ARI and delivered to ``sink`` (else the app's ``recording_sink``, else a
        LocalFileSink in ``settings.recordings_dir``). ``finish_on_key`` keys stop it
        when pressed. To wait for the end and learn what ended it, use :meth:`record`.
        """
        self.context.check_alive()
        started = await self.control.record_start(
            RecordOptions(name, fmt, sink, beep, max_duration, max_silence, finish_on_key)
        )
        await self.secure.adopt(started)  # started inside secure_input(): paused at once
        return started

    async def record(
        self,
        name: str = "",
        fmt: str = "wav",
        *,
        sink: RecordingSink | None = None,
        finish_on_key: str | None = "#",
        max_length: int | None = 3600,
        silence_timeout: int | None = None,
        beep: bool = False,
        transcribe: bool = False,
    ) -> RecordingResult:
        """Record until a key, ``max_length`` s, ``silence_timeout`` s or the hang-up.

        Returns a ``RecordingResult``: the name and ``reason`` (``finish_on_key``,
        ``max_length``, ``silence_timeout``, ``hangup``), and the ``key`` pressed. With
        ``transcribe``, also its ``transcript``, recognised from the file by the call's
        STT (``voice_config.stt``), and kept in the recording's metadata.
        """
        self.context.check_alive()
        stt = self.voice_config.stt
        if transcribe and stt is None:
            raise PipelineNotConfigured("record(transcribe=True)", ["stt"])
        options = RecordOptions(
            name,
            fmt,
            sink,
            beep,
            max_duration=max_length,
            max_silence=silence_timeout,
            finish_on_key=finish_on_key,
            transcribe=stt if transcribe else None,
        )
        return await self.control.record(options)

    async def record_stop(self) -> str | None:
        """Stop recording and hand the file to its sink; the name, or None if idle."""
        return await self.control.record_stop()

    # -- speech (the voice pipeline) -----------------------------------------------------

    def _voice_for_call(self, operation: str, needs: tuple[str, ...] = ()) -> CallVoice:
        """The call's voice, after checking ``needs`` (provider fields) are configured:
        PipelineNotConfigured names what ``operation`` lacks and where to pass it."""
        config = self.voice.config if self.voice is not None else self.voice_config
        # An engine (a speech-to-speech model) needs none of the separate providers.
        missing = [] if config.engine else [n for n in needs if getattr(config, n) is None]
        if missing or not config.configured:
            raise PipelineNotConfigured(operation, missing or list(needs) or ["stt", "llm", "tts"])
        if self.voice is None:
            self.voice = CallVoice(self.context, self.control, self.voice_config)
            engine = self.voice.engine
            agent = getattr(engine, "agent", None)
            if self.secure.secrets and isinstance(agent, Agent):
                self.secure.guard(agent)  # digits gathered securely before the agent existed
            if self.voice_config.on_pipeline is not None and isinstance(engine, VoicePipeline):
                self.voice_config.on_pipeline(self, engine)
        return self.voice

    @property
    def engine(self) -> ConversationEngine | None:
        """This call's conversation engine; None without an AI pipeline."""
        if not self.voice_config.configured:
            return None
        return self._voice_for_call("engine").engine

    @property
    def pipeline(self) -> VoicePipeline | None:
        """This call's STT -> LLM -> TTS pipeline (events, metrics); None without one
        (or when the engine is another kind, e.g. a speech-to-speech model)."""
        engine = self.engine
        return engine if isinstance(engine, VoicePipeline) else None

    @property
    def agent(self) -> Agent | None:
        """This call's LLM agent (history, tools); None without an AI pipeline. A
        speech-to-speech engine that keeps an ``agent`` (its history, tools) gives that."""
        agent = getattr(self.engine, "agent", None)
        return agent if isinstance(agent, Agent) else None

    async def say(self, text: str, *, interruptible: bool = True) -> SayResult:
        """Speak ``text``; returns when it was played, or early if the caller barged in.

        Raises :class:`~voxtra.errors.PipelineNotConfigured` without a TTS.
        """
        self.context.check_alive()
        self._check_agent_present()
        if not self.parties.mode.heard and self.parties.state is PartyState.CONNECTED:
            raise PartyError("say() while spying: nobody would hear it (barge() or whisper())")
        voice = self._voice_for_call("say()", ("tts",))
        pipeline = await voice.attach()
        return await pipeline.say(text, interruptible=interruptible)

    async def listen(self, timeout: float | None = None) -> UserTranscriptEvent | None:
        """The caller's next final transcript; None after ``timeout``; CallEnded on hangup."""
        self.context.check_alive()
        self._check_agent_present()
        pipeline = await self._voice_for_call("listen()", ("stt",)).attach()
        try:
            return await pipeline.listen(timeout)
        except CallEnded:
            raise CallEnded(self.id) from None

    async def converse(self) -> EndReason:
        """Hand the call to the autonomous STT -> LLM -> TTS conversation until it ends."""
        self.context.check_alive()
        self._check_agent_present()
        return await self._voice_for_call("converse()", ("stt", "llm", "tts")).converse()

    # -- transfer and bridging ---------------------------------------------------------

    async def transfer_to(
        self,
        target: str,
        *,
        timeout: int = 30,
        caller_id: str | None = None,
        warm: bool = False,
        summary: str | None = None,
        briefing: Briefing | None = None,
    ) -> None:
        """Blind transfer; with ``warm=True`` a warm one.

        Warm: the caller hears music on hold while ``target`` (an endpoint, or a number
        as for :meth:`connect`) is dialled; once it answers, the agent speaks
        ``summary`` to it (TTS) and/or runs ``await briefing(call)`` (its say/listen
        reach the target only; returning False declines), then caller and target are
        connected and the agent leaves (:meth:`close`). If the target does not answer,
        is busy, hangs up or declines, the caller is back with the agent and the
        outcome is raised (``CallNoAnswer``, ``CallBusy``, ``CallFailed``,
        ``TransferDeclined``).

        Blind:

        ``exten@context`` (or ``exten@context:priority``) continues the call in the
        dialplan: ARI ``continue``. A place the dialplan does not have (no such
        context, extension or priority) raises
        :class:`~voxtra.errors.InvalidTransferTarget` and the caller stays with the
        handler: Asterisk would take the ``continue`` and hang the caller up. Voxtra
        asks the dialplan first (``DIALPLAN_EXISTS``, func_dialplan; without it the
        call is continued unchecked). A channel endpoint (``PJSIP/100``,
        ``PJSIP/trunk/sip:+1555...``, ``Local/x@ctx``) is dialed from the app and, once
        answered, bridged with the caller; the app keeps both legs until one hangs up
        (``CallBusy``, ``CallNoAnswer`` or ``CallFailed`` if it is not answered).
        ARI ``redirect`` is not used: for PJSIP it sends a 302 back to the caller's
        carrier, which most trunks refuse.
        """
        self.context.check_alive()
        if warm:
            self.control.require("transfer_to(warm=True)")
            await self._warm_transfer(target, timeout, caller_id, summary, briefing)
            return
        await self.control.transfer(target, timeout=timeout, caller_id=caller_id)

    async def dial(
        self,
        targets: str | Sequence[str],
        *,
        timeout: float = 30.0,
        caller_id: str | None = None,
        ringback: bool = True,
        sequential: bool = False,
        transfer_keys: TransferKeys | bool | None = None,
    ) -> DialResult:
        """Connect the caller to ``targets`` (Twilio's ``<Dial>``): ring them all at once
        (or one after the other with ``sequential``), ringback to the caller meanwhile,
        bridge the first to answer and hang up the others. Returns when that
        conversation ends (or nobody answered) with the outcome: ``answered``, ``busy``,
        ``no_answer``, ``failed`` or ``canceled``. Every leg belongs to the call: it is
        hung up with the call, whatever happens (see :mod:`voxtra.calls.dial`).
        ``transfer_keys`` (True, or a :class:`~voxtra.calls.dial.TransferKeys`): the one
        who answers may transfer the caller with its keys (``*2`` number ``#``, then
        hang up), an attended transfer the app runs."""
        self.control.require("dial()")
        return await dial(
            self.context,
            targets,
            timeout=timeout,
            caller_id=caller_id,
            ringback=ringback,
            sequential=sequential,
            transfer_keys=transfer_keys,
        )

    async def _warm_transfer(
        self,
        target: str,
        timeout: int,
        caller_id: str | None,
        summary: str | None,
        briefing: Briefing | None,
    ) -> None:
        if summary is None and briefing is None:
            raise ConfigError("transfer_to(warm=True) needs summary= or briefing=")
        if summary is not None:  # no TTS: say so before anyone is dialled
            self._voice_for_call("transfer_to(summary=...)", ("tts",))
        if briefing is not None:
            check_callback(briefing, "briefing", ("call",))

        async def brief() -> bool | None:
            if summary is not None:
                await self.say(summary, interruptible=False)
            return await briefing(self) if briefing is not None else None

        await self.parties.warm_transfer(target, brief, ring_time=timeout, caller_id=caller_id)
        await self.close()

    async def transfer_to_queue(self, queue: str, *, context: str = "voxtra-queues") -> None:
        """Send the caller into an Asterisk queue (the shipped dialplan's ``voxtra-queues``)."""
        self.context.check_alive()
        self.control.require("transfer_to_queue()")
        await self.transfer_to(f"{queue}@{context}")

    async def bridge_with(self, other: CallSession) -> str:
        """Connect this call and ``other`` in a mixing bridge; returns the bridge id.

        Both calls are handed to the bridge: their handlers may return without hanging
        up. When one party leaves, the bridge is destroyed and the other is hung up once
        its handler has returned.
        """
        context = self.context
        context.check_alive()
        other.context.check_alive()
        self.control.require("bridge_with()")
        other.control.require("bridge_with()")
        bridge_id = await context.create_bridge("call")
        context.share_bridge(bridge_id, other.context)
        await context.request(context.ari.bridges.add_channel(bridge_id, [self.id, other.id]))
        context.handed_off = other.context.handed_off = True
        return bridge_id

    # -- three-party calls (voxtra.calls.parties) ---------------------------------------

    async def connect(
        self,
        ring_time: int = 60,
        to: str | None = None,
        *,
        caller_id: str | None = None,
        ringback: bool = True,
    ) -> None:
        """Dial the original callee (``to`` overrides: a number or an endpoint) and make
        a three-party call: caller, callee and the agent, in ``barge`` mode.

        A number becomes an endpoint through the route's ``metadata["connect_endpoint"]``
        template (default ``PJSIP/{number}``). The caller hears ringback meanwhile
        (``ringback=False``: only the agent). Raises ``CallBusy``, ``CallNoAnswer`` or
        ``CallFailed``, leaving the caller with the agent.
        """
        self.control.require("connect()")
        await self.parties.connect(
            ring_time=ring_time,
            to=to,
            mode=self.parties.mode,
            caller_id=caller_id,
            ringback=ringback,
        )

    @property
    def agent_mode(self) -> str:
        """The agent's mode: ``barge``, ``whisper(to='callee')``, ``spy``."""
        return str(self.parties.mode)

    async def barge(self) -> None:
        """Both parties hear the agent (the default after :meth:`connect`)."""
        await self.parties.set_mode(AgentMode("barge"))

    async def whisper(self, to: str = "callee") -> None:
        """Only ``to`` (``"callee"`` or ``"caller"``) hears the agent."""
        await self.parties.set_mode(AgentMode("whisper", to))  # type: ignore[arg-type]

    async def spy(self) -> None:
        """Nobody hears the agent; it still hears both parties (``say()`` then raises)."""
        await self.parties.set_mode(AgentMode("spy"))

    async def close(self) -> None:
        """The agent leaves; caller and callee stay connected. Idempotent."""
        await self.parties.close(self.voice)

    async def disconnect(self) -> None:
        """End the call for everyone (caller and callee hung up). Idempotent."""
        await self.parties.disconnect()

    # -- callbacks and helpers --------------------------------------------------------

    def on_hangup(self, callback: HangupCallback) -> HangupCallback:
        """Register an async callback run once when the call ends (decorator-friendly).

        ``callback(call)`` must be ``async def`` and take the call: anything else raises
        :class:`~voxtra.errors.CallbackSignatureError` here, not at hangup.
        """
        check_callback(callback, "on_hangup", ("call",))

        async def run() -> None:
            await callback(self)

        self.context.add_hangup_callback(repr(callback), run)
        return callback

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T | None]:
        """Run a helper task in the call's task group: cancelled when the call ends.

        An exception in it is logged (its result is then None); it does not end the call.
        """
        return self.context.spawn(coro, name=name)

    async def wait_for_event(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] | None = None,
        timeout: float | None = None,
    ) -> E:
        """Wait for the next ARI event of ``kind`` about this call."""
        self.context.check_alive()
        self.control.require("wait_for_event()")
        future = self.context.expect(kind, predicate or (lambda e: True))
        try:
            event = await self.context.wait(future, timeout)
        finally:
            self.context.forget(future)
        assert isinstance(event, kind)
        return event


def _check_variable_name(method: str, name: str) -> None:
    """A ConfigError for a name Asterisk refuses: the empty one (its 400 was raised as
    a raw AriBadRequest)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{method}() needs a variable name, not {name!r}")


def _recording_name(control: CallControl) -> str | None:
    """The name of the call's Asterisk recording in progress, if any (secure input
    pauses it)."""
    recorder = control.recorder if isinstance(control, AsteriskControl) else None
    return None if recorder is None else recorder.recording
