"""The child process behind :class:`voxtra.testing.sipcaller.SipCaller`.

pjsua2 aborts when the interpreter exits, and its callbacks must not meet asyncio, so
the SIP user agent lives alone in this process. It is driven by JSON lines: commands
on stdin (``{"id": 1, "cmd": "dial", ...}``), answers (``{"id": 1, "ok": true, ...}``)
and events (``{"event": "state", "call": "c1", ...}``) on the original stdout. Every
event carries ``t``, the wall-clock time (``time.time()``) it happened, so the parent
can line recordings up with call events. The process always ends with ``os._exit``.

pjsua2 runs with ``mainThreadOnly``: every pjsua call and callback happens on the
main thread, which loops over ``libHandleEvents``; a helper thread only reads stdin.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, TextIO

import pjsua2 as pj

_out_lock = threading.Lock()
_out: TextIO = sys.stdout


def emit(obj: dict[str, Any]) -> None:
    """Write one protocol line (thread-safe: DTMF callbacks may come from media threads)."""
    line = json.dumps(obj, separators=(",", ":"))
    with _out_lock:
        _out.write(line + "\n")
        _out.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} worker: {msg}\n")
    sys.stderr.flush()


def event(name: str, call: str | None = None, **data: Any) -> None:
    obj: dict[str, Any] = {"event": name, "t": time.time()}
    if call is not None:
        obj["call"] = call
    obj.update(data)
    emit(obj)


@dataclass
class Media:
    """What one call plays and records, and whether that has started."""

    play: str | None = None
    loop_play: bool = False
    record: str | None = None
    player: Any = None
    recorder: Any = None
    audio: Any = None
    codec: str | None = None
    stream: int = 0
    clocked: bool = False
    """The call's audio is transmitted to the (null) sound device."""
    rx_samples: list[tuple[float, int]] | None = None
    """(time, RTP packets received so far), sampled every loop while watched."""


_STATE_NAMES = {
    pj.PJSIP_INV_STATE_NULL: "null",
    pj.PJSIP_INV_STATE_CALLING: "calling",
    pj.PJSIP_INV_STATE_INCOMING: "incoming",
    pj.PJSIP_INV_STATE_EARLY: "early",
    pj.PJSIP_INV_STATE_CONNECTING: "connecting",
    pj.PJSIP_INV_STATE_CONFIRMED: "confirmed",
    pj.PJSIP_INV_STATE_DISCONNECTED: "disconnected",
}


class Player(pj.AudioMediaPlayer):  # type: ignore[misc]
    def __init__(self, worker: Worker, call_key: str) -> None:
        super().__init__()
        self.worker = worker
        self.call_key = call_key

    def onEof2(self) -> None:
        # Only reached for non-looping players: report it; the player is removed later.
        event("play_done", self.call_key)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, worker: Worker, key: str, acc: Any, call_id: int | None = None) -> None:
        if call_id is None:
            super().__init__(acc)
        else:
            super().__init__(acc, call_id)
        self.worker = worker
        self.key = key
        self.media = Media()
        self.ended = False

    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        name = _STATE_NAMES.get(ci.state, str(ci.state))
        event("state", self.key, state=name, code=ci.lastStatusCode, reason=ci.lastReason)
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.ended:
            self.ended = True
            # The Call object must outlive this callback: clean up from the main loop.
            self.worker.finished.append((self, ci.lastStatusCode, ci.lastReason))

    def onCallMediaState(self, prm: Any) -> None:
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            am = self.getAudioMedia(i)
            self.media.audio = am
            self.media.stream = i
            codec = None
            with contextlib.suppress(pj.Error):
                si = self.getStreamInfo(i)
                codec = f"{si.codecName}/{si.codecClockRate}"
            if codec != self.media.codec:
                self.media.codec = codec
                event("media", self.key, codec=codec)
            if not self.media.clocked:
                # A call port that nothing listens to is not clocked by the conference
                # bridge, and its stream then stops sending queued DTMF: with no
                # recording, Asterisk received 2 of "1234" (pjsua logged "dialing DTMF"
                # for all 4, "Sending DTMF digit" for 2). The null sound device as a
                # listener keeps the port clocked; it plays nowhere.
                with contextlib.suppress(pj.Error):
                    am.startTransmit(self.worker.ep.audDevManager().getPlaybackDevMedia())
                    self.media.clocked = True
            if self.media.record and self.media.recorder is None:
                self.worker.start_recorder(self, am)
            if self.media.play and self.media.player is None:
                self.worker.start_player(self, am, self.media.play, self.media.loop_play)
            break

    def onDtmfDigit(self, prm: Any) -> None:
        event("dtmf", self.key, digit=prm.digit)


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: Any) -> None:
        self.worker.incoming(prm.callId)


@dataclass
class Worker:
    config: dict[str, Any]
    ep: Any = None
    acc: Any = None
    calls: dict[str, Call] = field(default_factory=dict)
    finished: list[tuple[Call, int, str]] = field(default_factory=list)
    closing: list[tuple[Call, int, str, float]] = field(default_factory=list)
    commands: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    listen: dict[str, Any] | None = None
    counter: int = 0
    running: bool = True

    # -- setup -------------------------------------------------------------------------

    def start(self) -> int:
        cfg = self.config
        ep = pj.Endpoint()
        ep.libCreate()
        ec = pj.EpConfig()
        ec.uaConfig.threadCnt = 0
        ec.uaConfig.mainThreadOnly = True
        ec.uaConfig.userAgent = "voxtra-sipcaller"
        ec.logConfig.level = int(cfg.get("log_level", 4))
        ec.logConfig.consoleLevel = 0
        if cfg.get("log_path"):
            ec.logConfig.filename = cfg["log_path"]
            ec.logConfig.fileFlags = pj.PJ_O_APPEND
        rate = int(cfg["clock_rate"])
        ec.medConfig.clockRate = rate
        ec.medConfig.sndClockRate = rate
        ec.medConfig.noVad = True
        ec.medConfig.ecTailLen = 0
        ep.libInit(ec)
        self.ep = ep
        # No sound card: the null device still clocks the conference bridge.
        ep.audDevManager().setNullDev()
        self.set_codecs(list(cfg["codecs"]))

        tc = pj.TransportConfig()
        tc.port = int(cfg.get("port", 0))
        tc.boundAddress = cfg["host"]
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
        ep.libStart()
        port = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])

        ac = pj.AccountConfig()
        ac.idUri = f"sip:{cfg['user']}@{cfg['host']}:{port}"
        ac.sipConfig.transportId = tid
        ac.mediaConfig.transportConfig.boundAddress = cfg["host"]
        ac.mediaConfig.transportConfig.port = int(cfg.get("rtp_port", 0))
        acc = Account(self)
        acc.create(ac, True)
        self.acc = acc
        return port

    def set_codecs(self, wanted: list[str]) -> None:
        """Give the wanted codecs the top priorities, in order, and disable the rest."""
        available = {c.codecId: c.codecId for c in self.ep.codecEnum2()}
        chosen: list[str] = []
        for name in wanted:
            match = [cid for cid in available if cid == name or cid.startswith(name + "/")]
            if not match:
                raise ValueError(f"codec {name!r} not available; pjsua2 has {sorted(available)}")
            chosen.append(match[0])
        for cid in available:
            if cid not in chosen:
                self.ep.codecSetPriority(cid, 0)
        for i, cid in enumerate(chosen):
            self.ep.codecSetPriority(cid, 255 - i)

    # -- media -------------------------------------------------------------------------

    def start_recorder(self, call: Call, am: Any) -> None:
        path = call.media.record
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(path)
        am.startTransmit(rec)
        call.media.recorder = rec
        event("recording_started", call.key, path=path, rate=int(self.config["clock_rate"]))

    def start_player(self, call: Call, am: Any, path: str, loop: bool) -> None:
        self.stop_player(call)
        player = Player(self, call.key)
        player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(am)
        call.media.player = player
        call.media.play = path
        call.media.loop_play = loop
        event("play_started", call.key, path=path)

    def stop_player(self, call: Call) -> None:
        player = call.media.player
        if player is None:
            return
        call.media.player = None
        if call.media.audio is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(call.media.audio)
        del player

    def close_media(self, call: Call) -> bool:
        """Stop playing and recording; True if a recording is being finalised."""
        self.stop_player(call)
        call.media.audio = None
        rec = call.media.recorder
        if rec is None:
            return False
        call.media.recorder = None
        # The conference bridge removes the port (and the WAV writer writes its final
        # header) later, on its own clock thread: the caller waits for that.
        del rec
        return True

    # -- calls -------------------------------------------------------------------------

    def new_key(self) -> str:
        self.counter += 1
        return f"c{self.counter}"

    def incoming(self, call_id: int) -> None:
        key = self.new_key()
        call = Call(self, key, self.acc, call_id)
        self.calls[key] = call
        ci = call.getInfo()
        event("incoming", key, remote=ci.remoteUri, local=ci.localUri)
        op = pj.CallOpParam()
        if self.listen is None:
            op.statusCode = 480
            call.hangup(op)
            return
        opts = self.listen
        call.media.play = opts.get("play")
        call.media.loop_play = bool(opts.get("loop_play"))
        if opts.get("record_dir"):
            call.media.record = os.path.join(opts["record_dir"], f"{key}.wav")
            event("recording_path", key, path=call.media.record)
        if opts.get("answer", True):
            op.statusCode = 200
        else:
            op.statusCode = 180
        call.answer(op)

    def finish(self, call: Call, code: int, reason: str) -> None:
        if self.close_media(call):
            deadline = time.monotonic() + 2.0
            self.closing.append((call, code, reason, deadline))
        else:
            self.report_end(call, code, reason)

    def report_end(self, call: Call, code: int, reason: str) -> None:
        event("ended", call.key, code=code, reason=reason)
        self.calls.pop(call.key, None)

    def check_closing(self) -> None:
        """Report calls whose recording file is complete (or that waited too long)."""
        for item in list(self.closing):
            call, code, reason, deadline = item
            path = call.media.record or ""
            done = _wav_complete(path)
            if done or time.monotonic() > deadline:
                self.closing.remove(item)
                if not done:
                    log(f"recording {path} not finalised in time")
                event("recording_closed", call.key, path=path, complete=done)
                self.report_end(call, code, reason)

    # -- commands ----------------------------------------------------------------------

    def get_call(self, cmd: dict[str, Any]) -> Call:
        key = cmd.get("call")
        call = self.calls.get(str(key))
        if call is None or call.ended:
            raise LookupError(f"no active call {key!r}")
        return call

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "dial":
            key = self.new_key()
            call = Call(self, key, self.acc)
            call.media.play = cmd.get("play")
            call.media.loop_play = bool(cmd.get("loop_play"))
            call.media.record = cmd.get("record")
            self.calls[key] = call
            op = pj.CallOpParam(True)
            try:
                call.makeCall(cmd["uri"], op)
            except BaseException:
                self.calls.pop(key, None)
                raise
            return {"call": key}
        if name == "listen":
            self.listen = dict(cmd.get("options") or {})
            return {}
        if name == "answer":
            op = pj.CallOpParam()
            op.statusCode = int(cmd.get("code", 200))
            self.get_call(cmd).answer(op)
            return {}
        if name == "hangup":
            op = pj.CallOpParam()
            if cmd.get("code"):
                op.statusCode = int(cmd["code"])
            self.get_call(cmd).hangup(op)
            return {}
        if name == "dtmf":
            self.get_call(cmd).dialDtmf(str(cmd["digits"]))
            return {}
        if name == "play":
            call = self.get_call(cmd)
            if call.media.audio is None:
                raise RuntimeError("call has no active audio yet")
            self.start_player(call, call.media.audio, cmd["path"], bool(cmd.get("loop")))
            return {}
        if name == "stop_play":
            self.stop_player(self.get_call(cmd))
            return {}
        if name == "rx_watch":
            self.get_call(cmd).media.rx_samples = []
            return {}
        if name == "rx_samples":
            media = self.get_call(cmd).media
            samples, media.rx_samples = media.rx_samples or [], None
            return {"samples": samples}
        if name == "ping":
            return {"calls": sorted(self.calls)}
        if name == "quit":
            self.running = False
            return {}
        raise ValueError(f"unknown command {name!r}")

    # -- loop --------------------------------------------------------------------------

    def drain(self) -> None:
        while self.finished:
            call, code, reason = self.finished.pop(0)
            self.finish(call, code, reason)
        if self.closing:
            self.check_closing()
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return
            if cmd is None:  # stdin closed: the parent is gone
                self.running = False
                return
            reply: dict[str, Any] = {"id": cmd.get("id")}
            try:
                reply["result"] = self.handle(cmd)
                reply["ok"] = True
            except pj.Error as exc:
                reply.update(ok=False, error=f"{exc.title}: {exc.reason} ({exc.status})")
            except Exception as exc:
                reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            emit(reply)

    def run(self) -> None:
        while self.running:
            self.ep.libHandleEvents(10)
            self.drain()
            self.sample_rx()

    def sample_rx(self) -> None:
        """Note how many RTP packets each watched call has received by now."""
        for call in self.calls.values():
            samples = call.media.rx_samples
            if samples is None or call.ended or len(samples) >= 20_000:
                continue
            with contextlib.suppress(pj.Error):
                pkt = int(call.getStreamStat(call.media.stream).rtcp.rxStat.pkt)
                samples.append((time.time(), pkt))

    def shutdown(self) -> None:
        """Hang up, let the BYEs go out and close every recording before exiting."""
        if self.ep is None:
            return
        with contextlib.suppress(Exception):
            self.ep.hangupAllCalls()
        deadline = time.monotonic() + float(self.config.get("shutdown_wait", 1.0))
        while self.calls and time.monotonic() < deadline:
            self.ep.libHandleEvents(10)
            while self.finished:
                call, code, reason = self.finished.pop(0)
                self.finish(call, code, reason)
            self.check_closing()
        for call in list(self.calls.values()):
            if not any(item[0] is call for item in self.closing):
                self.finish(call, 0, "worker shutdown")
        while self.closing:
            self.ep.libHandleEvents(10)
            self.check_closing()


def _wav_complete(path: str) -> bool:
    """True once the WAV header's RIFF length matches the file: the writer is closed."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF":
        return False
    return int.from_bytes(head[4:8], "little") == size - 8


def _read_stdin(commands: queue.Queue[dict[str, Any] | None]) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            commands.put(json.loads(line))
        except json.JSONDecodeError:
            log(f"bad command line: {line!r}")
    commands.put(None)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a crashed test leaves no caller."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def main() -> None:
    global _out
    # Keep the real stdout for the protocol only; anything C code prints goes to stderr.
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    _out = os.fdopen(proto_fd, "w", buffering=1)
    _die_with_parent()
    code = 0
    worker: Worker | None = None
    try:
        config = json.loads(sys.argv[1])
        worker = Worker(config)
        port = worker.start()
        threading.Thread(target=_read_stdin, args=(worker.commands,), daemon=True).start()
        event("ready", port=port, clock_rate=int(config["clock_rate"]))
        log(f"ready on port {port}")
        worker.run()
    except BaseException as exc:
        code = 1
        log("fatal: " + "".join(traceback.format_exception(exc)))
        with contextlib.suppress(Exception):
            event("fatal", error=f"{type(exc).__name__}: {exc}")
    finally:
        if worker is not None:
            with contextlib.suppress(BaseException):
                worker.shutdown()
        with contextlib.suppress(Exception):
            event("exit", code=code)
            _out.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
