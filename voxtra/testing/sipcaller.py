"""A scripted SIP phone for tests, the demo and developers: dial, play, record, DTMF.

:class:`SipCaller` drives a real SIP user agent (pjsua2, null audio device) that runs
in a child process (``voxtra.testing._sipcaller_worker``), because pjsua2 aborts at
interpreter exit and its threads do not mix with asyncio. The child is always killed
when the caller closes, when it is garbage-collected, and when this process dies.

Recordings hold what the phone *heard*. ``SipCall.recording_started_at`` is the
wall-clock time (``time.time()``) of the recording's first sample, to within one
20 ms frame, so a test can find an event ("the prompt was flushed at t") in it with
:meth:`SipCall.recording_offset`.

Command line, for developers::

    python -m voxtra.testing.sipcaller dial 600 --play x.wav --record out.wav --seconds 5
    python -m voxtra.testing.sipcaller dial 1000 --dtmf "1w2W#" --dtmf-delay 2
    python -m voxtra.testing.sipcaller listen --port 5070 --record-dir /tmp/calls --dtmf 1

``--dtmf`` takes a DTMF script (:func:`parse_dtmf_script`): digits ``0-9 * # A-D``,
``w`` for a 0.5 s pause and ``W`` for a 1 s pause (Twilio's ``sendDigits`` convention).
It starts ``--dtmf-delay`` seconds (default 0.5) after the call is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from voxtra.errors import VoxtraError

__all__ = [
    "DIGIT_PERIOD",
    "CallEvent",
    "SipCall",
    "SipCaller",
    "SipCallerError",
    "SipCallerTimeout",
    "main",
    "parse_dtmf_script",
]

logger = logging.getLogger(__name__)

StrPath = str | PathLike[str]
_NARROWBAND = {"PCMU", "PCMA", "GSM", "iLBC", "speex/8000", "L16/8000"}
_DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
_DTMF_PAUSES = {"w": 0.5, "W": 1.0}

DIGIT_PERIOD = 0.25
"""Seconds from one scripted digit to the next when no pause is between them.

pjsua sends each RFC 4733 digit for 200 ms and queues the next one 40 ms after it ends
(Asterisk's ChannelDtmfReceived events of a queued "1234" were 240 ms apart, each with
``duration_ms`` 200). A script sends digit by digit on this period, so a pause starts
when the previous digit has ended instead of while it is still queued.
"""


class SipCallerError(VoxtraError):
    """The SIP caller could not start, a command failed, or a call did not go as asked."""


class SipCallerTimeout(SipCallerError, TimeoutError):
    """A wait on the SIP caller ran out of time."""


def parse_dtmf_script(script: str) -> list[str | float]:
    """Parse a DTMF script into digits (``str``) and pauses (seconds, ``float``).

    ``0-9 * # A-D`` (``a-d`` too) are digits; ``w`` is a 0.5 s pause and ``W`` a 1 s
    pause, as in Twilio's ``sendDigits``; spaces are ignored. Consecutive pauses are
    merged: ``"1wW2"`` is ``["1", 1.5, "2"]``. Anything else raises
    :class:`SipCallerError` naming the character and its position.
    """
    steps: list[str | float] = []
    for pos, ch in enumerate(script):
        if ch.isspace():
            continue
        if ch in _DTMF_DIGITS:
            steps.append(ch.upper())
        elif ch in _DTMF_PAUSES:
            if steps and isinstance(steps[-1], float):
                steps[-1] += _DTMF_PAUSES[ch]
            else:
                steps.append(_DTMF_PAUSES[ch])
        else:
            raise SipCallerError(
                f"invalid DTMF script {script!r}: {ch!r} at position {pos} is neither a "
                "digit (0-9 * # A-D) nor a pause (w = 0.5 s, W = 1 s)"
            )
    if not any(isinstance(step, str) for step in steps):
        raise SipCallerError(f"DTMF script {script!r} has no digits")
    return steps


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing that happened to a call, as the child reported it."""

    name: str
    t: float
    """Wall-clock time (``time.time()``) in the child when it happened."""
    data: dict[str, Any]


@dataclass(eq=False)
class SipCall:
    """One call of a :class:`SipCaller`: its state, events and recording."""

    caller: SipCaller
    id: str
    direction: Literal["outbound", "inbound"]
    remote_uri: str | None = None
    recording_path: Path | None = None
    recording_started_at: float | None = None
    recording_rate: int | None = None
    codec: str | None = None
    """Negotiated codec as ``NAME/RATE`` (e.g. ``PCMU/8000``) once media is up."""
    answered_at: float | None = None
    ended_at: float | None = None
    end_code: int | None = None
    end_reason: str | None = None
    dtmf_received: str = ""
    events: list[CallEvent] = field(default_factory=list)
    _answered: asyncio.Event = field(default_factory=asyncio.Event)
    _media: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: asyncio.Event = field(default_factory=asyncio.Event)
    _play_done: asyncio.Event = field(default_factory=asyncio.Event)
    _updated: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def _on_event(self, name: str, t: float, data: dict[str, Any]) -> None:
        self.events.append(CallEvent(name, t, data))
        if name == "state" and data.get("state") == "confirmed" and self.answered_at is None:
            self.answered_at = t
            self._answered.set()
        elif name == "media":
            self.codec = data.get("codec")
            self._media.set()
        elif name == "recording_path":
            self.recording_path = Path(data["path"])
        elif name == "recording_started":
            self.recording_path = Path(data["path"])
            self.recording_started_at = t
            self.recording_rate = int(data["rate"])
        elif name == "play_started":
            self._play_done.clear()
        elif name == "play_done":
            self._play_done.set()
        elif name == "dtmf":
            self.dtmf_received += str(data.get("digit", ""))
        elif name == "ended":
            self.ended_at = t
            self.end_code = data.get("code")
            self.end_reason = data.get("reason")
            self._ended.set()
        self._updated.set()

    async def _wait(self, ev: asyncio.Event, what: str, timeout: float) -> None:
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            raise SipCallerTimeout(f"call {self.id}: no {what} within {timeout} s") from None

    async def wait_answered(self, timeout: float = 10.0) -> None:
        """Wait until the call is up (200 OK / ACK). Raises if it ended first."""
        waiter = asyncio.ensure_future(self._answered.wait())
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait(
                {waiter, ender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            ender.cancel()
        if self.answered:
            return
        if self.ended:
            raise SipCallerError(
                f"call {self.id} ended before it was answered: {self.end_code} {self.end_reason}"
            )
        raise SipCallerTimeout(f"call {self.id}: not answered within {timeout} s")

    async def wait_media(self, timeout: float = 10.0) -> None:
        """Wait until audio flows (the codec is then known)."""
        await self._wait(self._media, "media", timeout)

    async def wait_ended(self, timeout: float = 10.0) -> None:
        """Wait until the call is over and its recording file is complete."""
        await self._wait(self._ended, "hangup", timeout)

    async def wait_play_done(self, timeout: float = 30.0) -> None:
        """Wait until a non-looping file played by this call reached its end."""
        await self._wait(self._play_done, "end of playback", timeout)

    async def wait_dtmf(self, digits: str, timeout: float = 10.0) -> None:
        """Wait until the digits received from the far end end with ``digits``."""

        async def check() -> None:
            while not self.dtmf_received.endswith(digits):
                self._updated.clear()
                await self._updated.wait()

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise SipCallerTimeout(
                f"call {self.id}: DTMF {digits!r} not received in {timeout} s "
                f"(got {self.dtmf_received!r})"
            ) from None

    async def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits as RFC 4733 telephone events (queued one after another)."""
        if not digits or any(d not in "0123456789*#ABCDabcd" for d in digits):
            raise SipCallerError(f"invalid DTMF digits {digits!r}")
        await self.caller._command("dtmf", call=self.id, digits=digits)

    async def send_dtmf_script(self, script: str) -> None:
        """Send a DTMF script (:func:`parse_dtmf_script`); return when its last digit
        is handed to the phone (that digit then sounds for another 200 ms).

        Digits go one by one, :data:`DIGIT_PERIOD` apart; a pause adds its length to
        the wait after the digit before it, so ``"1w2"`` has 0.5 s more silence between
        the digits than ``"12"``. The script is checked before anything is sent.
        """
        steps = parse_dtmf_script(script)
        for i, step in enumerate(steps):
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            await self.send_dtmf(step)
            if i + 1 < len(steps):
                await asyncio.sleep(DIGIT_PERIOD)

    async def play(self, path: StrPath, loop: bool = False) -> None:
        """Start playing a 16-bit PCM WAV into the call, replacing what was playing."""
        await self.caller._command("play", call=self.id, path=_existing(path), loop=loop)

    async def stop_play(self) -> None:
        await self.caller._command("stop_play", call=self.id)

    async def watch_rx(self) -> None:
        """Start sampling how many RTP packets the phone has received (every ~10 ms)."""
        await self.caller._command("rx_watch", call=self.id)

    async def rx_samples(self) -> list[tuple[float, int]]:
        """Stop sampling; ``(wall-clock time, RTP packets received so far)`` pairs.

        pjsua2 counts every packet, silence included; its recorder cannot tell silence
        packets from no packets (the jitter buffer fills gaps), this can.
        """
        result = await self.caller._command("rx_samples", call=self.id)
        return [(float(t), int(n)) for t, n in result["samples"]]

    async def answer(self, code: int = 200) -> None:
        """Answer an inbound call (only needed when listening with ``answer=False``)."""
        await self.caller._command("answer", call=self.id, code=code)

    async def hangup(self, code: int | None = None) -> None:
        """Hang up (BYE, or CANCEL / a final ``code`` for a call not yet answered).

        A call that already ended is left alone.
        """
        if self.ended:
            return
        try:
            await self.caller._command("hangup", call=self.id, code=code)
        except SipCallerError:
            if not self.ended:
                raise

    def recording_offset(self, t: float) -> float:
        """Seconds into the recording that correspond to wall-clock time ``t``."""
        if self.recording_started_at is None:
            raise SipCallerError(f"call {self.id} has no recording (yet)")
        return t - self.recording_started_at

    def event_time(self, name: str, **match: Any) -> float | None:
        """Wall-clock time of the first event ``name`` whose data has ``match``."""
        for ev in self.events:
            if ev.name == name and all(ev.data.get(k) == v for k, v in match.items()):
                return ev.t
        return None


def _existing(path: StrPath) -> str:
    p = Path(path).resolve()
    if not p.is_file():
        raise SipCallerError(f"no such audio file: {p}")
    return str(p)


def _absolute(path: StrPath) -> str:
    return os.path.abspath(path)


def _favour(pid: int) -> None:
    """Run the phone ahead of busy processes where allowed (root): a test phone that the
    scheduler stood still for 1.6 s lost 1.1 s of a recorded answer on a loaded 2-core
    box (the voice agent test's one failure under load), which no app can be blamed for.
    Set from here, after the spawn: a ``preexec_fn`` is unsafe with the parent's threads."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, -5)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


class SipCaller:
    """A SIP phone on ``host``: ``async with SipCaller() as caller: await caller.dial(...)``.

    ``codecs`` are offered in order and every other codec is disabled: ``("PCMU",)``,
    ``("PCMA",)``, or any ``NAME[/RATE]`` pjsua2 has (its wheel has no L16/16000: asking
    for a codec it lacks raises :class:`SipCallerError` naming the ones it has).
    ``clock_rate`` is the rate of the phone's mixer and so of its recordings (default
    8000 for narrowband codecs, else 16000). ``workdir`` holds the log and default
    recordings (a new temporary directory if not given, kept for post-mortems).
    """

    def __init__(
        self,
        local_port: int = 0,
        codecs: Sequence[str] = ("PCMU",),
        *,
        host: str = "127.0.0.1",
        user: str = "sipcaller",
        clock_rate: int | None = None,
        workdir: StrPath | None = None,
        log_level: int = 4,
        start_timeout: float = 10.0,
        command_timeout: float = 5.0,
    ) -> None:
        if not codecs:
            raise SipCallerError("at least one codec is needed")
        self.codecs = tuple(codecs)
        if clock_rate is None:
            narrow = all(c in _NARROWBAND or c.endswith("/8000") for c in self.codecs)
            clock_rate = 8000 if narrow else 16000
        self.clock_rate = clock_rate
        self.host = host
        self.user = user
        self._requested_port = local_port
        self.port: int = 0
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sipcaller-"))
        self.log_path = self.workdir / "sipcaller.log"
        self._log_level = log_level
        self._start_timeout = start_timeout
        self._command_timeout = command_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._calls: dict[str, SipCall] = {}
        self._incoming: asyncio.Queue[SipCall] = asyncio.Queue()
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._exit_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> SipCaller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the child phone and wait until its SIP port is bound."""
        if self._proc is not None:
            raise SipCallerError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "codecs": list(self.codecs),
            "host": self.host,
            "user": self.user,
            "port": self._requested_port,
            "clock_rate": self.clock_rate,
            "log_path": str(self.log_path),
            "log_level": self._log_level,
        }
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        with self.log_path.open("ab") as log_file:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "voxtra.testing._sipcaller_worker",
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                limit=1 << 20,
            )
        self._finalizer = weakref.finalize(self, _kill, self._proc)
        _favour(self._proc.pid)
        self._reader = asyncio.create_task(self._read_loop())
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), self._start_timeout)
        except TimeoutError:
            await self.close()
            raise SipCallerTimeout(
                f"SIP caller did not start within {self._start_timeout} s; log: {self.log_path}"
            ) from None
        except SipCallerError:
            await self.close()
            raise
        self.port = int(ready["port"])
        logger.debug("sip caller up on %s:%d (log %s)", self.host, self.port, self.log_path)

    async def close(self, timeout: float = 5.0) -> None:
        """Hang up every call, finish recordings, and end the child (killed if it lingers)."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                await self._command("quit", timeout=timeout)
            with contextlib.suppress(Exception):
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                logger.warning("sip caller did not exit in %s s; killing it", timeout)
        _kill(proc)
        await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 1.0)
        if self._finalizer is not None:
            self._finalizer.detach()

    # -- protocol ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while True:
                line = await stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("sip caller wrote a non-protocol line: %r", line[:200])
                    continue
                self._dispatch(msg)
        finally:
            code = await self._proc.wait()
            reason = self._exit_error or f"SIP caller process exited with code {code}"
            err = SipCallerError(f"{reason}; log: {self.log_path}")
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(err)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            now = time.time()
            for call in self._calls.values():
                if not call.ended:
                    call._on_event("ended", now, {"code": 0, "reason": reason})

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg and "event" not in msg:
            fut = self._pending.pop(int(msg["id"]), None)
            if fut is not None and not fut.done():
                if msg.get("ok"):
                    fut.set_result(msg.get("result") or {})
                else:
                    fut.set_exception(SipCallerError(str(msg.get("error"))))
            return
        name = str(msg.pop("event", ""))
        t = float(msg.pop("t", time.time()))
        key = msg.pop("call", None)
        if name == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
            return
        if name == "fatal":
            self._exit_error = f"SIP caller failed: {msg.get('error')}"
            return
        if key is None:
            return
        call = self._calls.get(key)
        if call is None:
            inbound = name == "incoming"
            call = SipCall(self, key, "inbound" if inbound else "outbound")
            self._calls[key] = call
            if inbound:
                call.remote_uri = msg.get("remote")
                self._incoming.put_nowait(call)
        call._on_event(name, t, msg)

    async def _command(
        self, cmd: str, *, timeout: float | None = None, **args: Any
    ) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise SipCallerError(f"SIP caller is not running; log: {self.log_path}")
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        payload = {"id": ident, "cmd": cmd, **{k: v for k, v in args.items() if v is not None}}
        try:
            proc.stdin.write((json.dumps(payload) + "\n").encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._pending.pop(ident, None)
            raise SipCallerError(f"SIP caller went away; log: {self.log_path}") from exc
        limit = self._command_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            self._pending.pop(ident, None)
            raise SipCallerTimeout(f"SIP caller did not answer {cmd!r} in {limit} s") from None

    # -- calls -------------------------------------------------------------------------

    @property
    def contact_uri(self) -> str:
        """Where this phone can be called (e.g. for an ARI originate)."""
        return f"sip:{self.user}@{self.host}:{self.port}"

    async def dial(
        self,
        uri: str,
        play: StrPath | None = None,
        record: StrPath | bool | None = None,
        loop_play: bool = False,
    ) -> SipCall:
        """Place a call. ``uri`` is a SIP URI, or just an extension for the local Asterisk.

        ``play`` starts a WAV as soon as media is up; ``record`` (a path, or True for a
        file in ``workdir``) records what the phone hears from then on.
        """
        if not uri.startswith(("sip:", "sips:")):
            uri = f"sip:{uri}@127.0.0.1:5060"
        record_path: str | None = None
        if record is True:
            record_path = str(self.workdir / f"call-{len(self._calls) + 1}-{time.time_ns()}.wav")
        elif record:
            record_path = _absolute(record)
        result = await self._command(
            "dial",
            uri=uri,
            play=_existing(play) if play is not None else None,
            record=record_path,
            loop_play=loop_play,
        )
        key = str(result["call"])
        call = self._calls.get(key)
        if call is None:
            call = SipCall(self, key, "outbound")
            self._calls[key] = call
        call.remote_uri = uri
        if record_path is not None:
            call.recording_path = Path(record_path)
        return call

    async def listen(
        self,
        play: StrPath | None = None,
        record: bool = True,
        loop_play: bool = False,
        answer: bool = True,
    ) -> None:
        """Accept inbound calls from now on: answer them at once (or only ring, with
        ``answer=False``), play ``play`` and record each into ``workdir``."""
        options: dict[str, Any] = {"answer": answer, "loop_play": loop_play}
        if play is not None:
            options["play"] = _existing(play)
        if record:
            options["record_dir"] = str(self.workdir.resolve())
        await self._command("listen", options=options)

    async def next_incoming_call(self, timeout: float = 10.0) -> SipCall:
        """The next call that rang this phone (in arrival order)."""
        try:
            return await asyncio.wait_for(self._incoming.get(), timeout)
        except TimeoutError:
            raise SipCallerTimeout(f"no incoming call within {timeout} s") from None

    @property
    def calls(self) -> list[SipCall]:
        return list(self._calls.values())


# -- command line ----------------------------------------------------------------------


async def _send_script_after(call: SipCall, script: str, delay: float) -> None:
    await asyncio.sleep(delay)
    await call.send_dtmf_script(script)
    print(f"call {call.id}: sent DTMF {script!r}", file=sys.stderr)


async def _cli(args: argparse.Namespace) -> int:
    codecs = tuple(args.codec or ["PCMU"])
    if args.dtmf:
        parse_dtmf_script(args.dtmf)  # a bad script fails before anything is dialed
    senders: list[asyncio.Task[None]] = []
    async with SipCaller(args.port, codecs, workdir=args.workdir) as caller:
        if args.action == "listen":
            # Announced only once listening: a call placed on this line is answered.
            await caller.listen(play=args.play, record=args.record_dir is not None)
        print(f"sip caller on {caller.contact_uri}; log {caller.log_path}", file=sys.stderr)
        if args.action == "dial":
            call = await caller.dial(
                args.target, play=args.play, record=args.record, loop_play=args.loop
            )
            await call.wait_answered(args.answer_timeout)
            print(f"answered, codec {call.codec}", file=sys.stderr)
            if args.dtmf:
                senders.append(
                    asyncio.create_task(_send_script_after(call, args.dtmf, args.dtmf_delay))
                )
            with contextlib.suppress(SipCallerTimeout):
                await call.wait_ended(args.seconds)
            await call.hangup()
            await call.wait_ended(5)
        else:
            deadline = time.monotonic() + args.seconds
            while (left := deadline - time.monotonic()) > 0:
                try:
                    call = await caller.next_incoming_call(left)
                except SipCallerTimeout:
                    break
                print(f"incoming call {call.id} from {call.remote_uri}", file=sys.stderr)
                if args.dtmf:
                    senders.append(asyncio.create_task(_answered_then_script(call, args)))
        for task in senders:
            task.cancel()
        for task in senders:
            with contextlib.suppress(asyncio.CancelledError, SipCallerError):
                await task
        for c in caller.calls:
            print(
                json.dumps(
                    {
                        "call": c.id,
                        "codec": c.codec,
                        "end": [c.end_code, c.end_reason],
                        "recording": str(c.recording_path) if c.recording_path else None,
                        "dtmf_received": c.dtmf_received,
                    }
                )
            )
    return 0


async def _answered_then_script(call: SipCall, args: argparse.Namespace) -> None:
    await call.wait_answered(args.seconds)
    await _send_script_after(call, args.dtmf, args.dtmf_delay)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxtra.testing.sipcaller")
    sub = parser.add_subparsers(dest="action", required=True)
    dial = sub.add_parser("dial", help="call an extension or SIP URI")
    dial.add_argument("target", help="extension on 127.0.0.1:5060, or a sip: URI")
    dial.add_argument("--record", help="WAV file for what the caller hears")
    dial.add_argument("--loop", action="store_true", help="loop --play")
    dial.add_argument("--answer-timeout", type=float, default=10.0)
    listen = sub.add_parser("listen", help="answer incoming calls")
    listen.add_argument("--record-dir", help="record each call here (sets --workdir)")
    for p in (dial, listen):
        p.add_argument("--play", help="WAV file to play into the call")
        p.add_argument("--seconds", type=float, default=10.0, help="how long to stay")
        p.add_argument("--codec", action="append", help="PCMU, PCMA, ... (repeatable)")
        p.add_argument("--port", type=int, default=0, help="local SIP port (0: any)")
        p.add_argument("--workdir", help="directory for the log and recordings")
        p.add_argument(
            "--dtmf",
            metavar="SCRIPT",
            help="DTMF to send once answered: digits 0-9*#A-D, w = 0.5 s pause, W = 1 s "
            'pause (e.g. "1w2W#")',
        )
        p.add_argument(
            "--dtmf-delay",
            type=float,
            default=0.5,
            metavar="SECONDS",
            help="wait this long after the answer before sending --dtmf (default 0.5)",
        )
    args = parser.parse_args(argv)
    if args.dtmf_delay < 0:
        parser.error("--dtmf-delay must not be negative")
    if args.action == "listen" and args.record_dir:
        args.workdir = args.record_dir
    try:
        return asyncio.run(_cli(args))
    except SipCallerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
