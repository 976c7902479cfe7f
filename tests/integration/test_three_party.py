"""Three-party calls with real SIP parties: who hears whom, measured.

Covered: the agent's modes (barge, whisper to either party, spy), close, disconnect,
a busy callee, the callee hanging up, each party's own labelled audio, a warm transfer,
a supervisor's modes, and examples/front_desk.py.

Asterisk calls two pjsua2 phones: the caller (playing 440 Hz) is the app's call, and
the handler's ``connect()`` dials the callee (playing 880 Hz). The agent sends 1,300 Hz
through ``call.send_audio`` the whole time, and its ``audio_stream()`` is kept with the
time each chunk came. Each phone records what it heard; each mode runs for a window of
about 1.5 s, and the level of each tone in each window says who heard whom. Levels
measured on Asterisk 22.10.1 (see voxtra/calls/parties.py): a tone heard is at about
-21 dBFS, one not heard below -65; the bounds here (-35 / -50) are wide.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.errors import AriNotFound
from voxtra.calls.parties import PartyState, SupervisorMode
from voxtra.calls.voice import VoiceConfig
from voxtra.errors import CallBusy
from voxtra.media.frames import AudioChunk, Codec
from voxtra.testing import audio
from voxtra.testing.pytest_plugin import AsteriskTarget
from voxtra.testing.sipcaller import SipCall, SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

CALLER_HZ, CALLEE_HZ, AGENT_HZ = 440, 880, 1300
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WINDOW = 1.5
HEARD, NOT_HEARD = -35.0, -50.0


def level(samples: Any, rate: int, freq: float) -> float:
    """The level (dBFS) of the tone at ``freq`` in ``samples``: the spectrum's energy
    within 25 Hz of it (a Hann window; the other tones are hundreds of Hz away)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < rate // 10:
        return -200.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) / x.size
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = (freqs > freq - 25) & (freqs < freq + 25)
    energy = float(np.sqrt(np.sum(spectrum[band] ** 2)))
    return 20 * float(np.log10(max(energy, 1e-12) / 32768))


async def gone(get: Callable[[str], Awaitable[Any]], ident: str, within: float = 5.0) -> bool:
    """True once Asterisk answers 404 for ``ident`` (a hangup is done a moment after
    its request is answered)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await get(ident)
        except AriNotFound:
            return True
        await asyncio.sleep(0.05)
    return False


@dataclass
class Party:
    """Three parties on one call, and what each heard when."""

    app: VoxtraApp
    caller_phone: SipCaller
    callee_phone: SipCaller
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    agent: list[tuple[float, bytes]] = field(default_factory=list)
    """(arrival time, 20 ms of PCM16 at 8 kHz) of the agent's audio_stream()."""

    @property
    def callee_endpoint(self) -> str:
        return f"PJSIP/sipcaller/sip:callee@127.0.0.1:{self.callee_phone.port}"

    async def window(self, name: str) -> None:
        start = time.time()
        await asyncio.sleep(WINDOW)
        self.windows[name] = (start, time.time())

    async def until_window(self, name: str, within: float = 20.0) -> None:
        """Until window ``name`` (recorded by the handler) is over."""
        deadline = time.monotonic() + within
        while name not in self.windows:
            assert time.monotonic() < deadline, f"window {name!r} never ended"
            await asyncio.sleep(0.05)

    def heard(self, phone: SipCall, name: str) -> dict[int, float]:
        """Each tone's level in what ``phone`` heard during window ``name``."""
        assert phone.recording_path is not None
        samples, rate = audio.read_wav(phone.recording_path)
        start, end = self.windows[name]
        # 0.3 s after the switch (a request and the jitter buffer), 0.1 s before the end
        a = round((phone.recording_offset(start) + 0.3) * rate)
        b = round((phone.recording_offset(end) - 0.1) * rate)
        return {f: level(samples[a:b], rate, f) for f in (CALLER_HZ, CALLEE_HZ, AGENT_HZ)}

    def agent_heard(self, name: str) -> dict[int, float]:
        start, end = self.windows[name]
        pcm = b"".join(data for t, data in self.agent if start + 0.3 <= t <= end - 0.1)
        samples = np.frombuffer(pcm, dtype="<i2")
        return {f: level(samples, 8000, f) for f in (CALLER_HZ, CALLEE_HZ, AGENT_HZ)}


@pytest.fixture
async def parties(asterisk: AsteriskTarget, tmp_path: Path) -> AsyncIterator[Party]:
    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        f"voxtra-3p-{uuid.uuid4().hex[:8]}",
        environ={},
        handler_deadline=2.0,
    )
    await app.start()
    caller_tone = audio.write_wav(
        tmp_path / "caller.wav", audio.tone(CALLER_HZ, 20, amplitude=0.3), 8000
    )
    callee_tone = audio.write_wav(
        tmp_path / "callee.wav", audio.tone(CALLEE_HZ, 20, amplitude=0.3), 8000
    )
    try:
        async with (
            SipCaller(workdir=tmp_path / "caller") as caller_phone,
            SipCaller(workdir=tmp_path / "callee") as callee_phone,
        ):
            await caller_phone.listen(play=caller_tone, record=True)
            await callee_phone.listen(play=callee_tone, record=True)
            yield Party(app, caller_phone, callee_phone)
    finally:
        await app.stop()


async def run_call(
    party: Party, handler: Callable[[CallSession], Awaitable[None]]
) -> tuple[CallSession, SipCall]:
    """Asterisk calls the caller's phone; ``handler`` runs as its call's handler, with the
    agent already sending 1,300 Hz and its stream being kept."""

    async def agent(call: CallSession) -> None:
        tone = audio.tone(AGENT_HZ, 0.2, amplitude=0.3).astype("<i2").tobytes()

        async def send() -> None:
            while True:
                await call.send_audio(AudioChunk(tone, 8000, Codec.PCM16))

        async def keep() -> None:
            async for chunk in call.audio_stream(codec="pcm16", sample_rate=8000):
                party.agent.append((time.time(), chunk.data))

        await call.media()
        call.spawn(send())
        call.spawn(keep())
        await handler(call)

    session = await party.app.originate(
        f"PJSIP/sipcaller/sip:caller@127.0.0.1:{party.caller_phone.port}",
        handler=agent,
        timeout=10,
    )
    phone = await party.caller_phone.next_incoming_call(10)
    await phone.wait_answered(10)
    return session, phone


async def test_barge_whisper_and_spy_decide_who_hears_the_agent(parties: Party) -> None:
    modes_done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.connect(ring_time=10, to=parties.callee_endpoint)
        await parties.window("barge")
        await call.whisper(to="callee")
        await parties.window("whisper-callee")
        await call.whisper(to="caller")
        await parties.window("whisper-caller")
        await call.spy()
        await parties.window("spy")
        modes_done.set()
        await call.disconnect()

    session, caller = await run_call(parties, handler)
    callee = await parties.callee_phone.next_incoming_call(10)
    await asyncio.wait_for(modes_done.wait(), 30)
    await caller.wait_ended(10)
    await callee.wait_ended(10)
    await session.wait_ended(10)

    for name, caller_hears, callee_hears in (
        ("barge", True, True),
        ("whisper-callee", False, True),
        ("whisper-caller", True, False),
        ("spy", False, False),
    ):
        at_caller, at_callee = parties.heard(caller, name), parties.heard(callee, name)
        detail = f"{name}: caller heard {at_caller}, callee heard {at_callee}"
        # the parties hear each other in every mode
        assert at_caller[CALLEE_HZ] > HEARD and at_callee[CALLER_HZ] > HEARD, detail
        assert (at_caller[AGENT_HZ] > HEARD) is caller_hears, detail
        assert (at_caller[AGENT_HZ] < NOT_HEARD) is not caller_hears, detail
        assert (at_callee[AGENT_HZ] > HEARD) is callee_hears, detail
        assert (at_callee[AGENT_HZ] < NOT_HEARD) is not callee_hears, detail
        # and the agent hears both of them in every mode
        agent = parties.agent_heard(name)
        assert agent[CALLER_HZ] > HEARD and agent[CALLEE_HZ] > HEARD, f"{name}: agent {agent}"


async def test_close_leaves_caller_and_callee_talking_without_the_agent(
    parties: Party,
) -> None:
    closed = asyncio.Event()
    agent_channels: list[str] = []
    bridges: list[str] = []

    async def handler(call: CallSession) -> None:
        await call.connect(ring_time=10, to=parties.callee_endpoint)
        await parties.window("barge")
        assert call.parties.snoop_id and call.media_path.channel_id
        agent_channels.extend([call.parties.snoop_id, call.media_path.channel_id])
        bridges.append(str(call.media_path.bridge_id))
        await call.close()
        await call.close()  # idempotent
        closed.set()
        await parties.window("closed")
        # the handler returns: the call is the parties' now

    session, caller = await run_call(parties, handler)
    callee = await parties.callee_phone.next_incoming_call(10)
    await asyncio.wait_for(closed.wait(), 20)
    ari = parties.app.ari
    for channel_id in agent_channels:
        assert await gone(ari.channels.get, channel_id), channel_id
    assert await gone(ari.bridges.get, bridges[0]), bridges[0]
    await parties.until_window("closed")  # with the handler returned after it
    await asyncio.sleep(0.3)
    assert not session.ended and session.parties.state is PartyState.CLOSED
    await callee.hangup()  # one party hangs up: the other is hung up too
    await callee.wait_ended(10)  # (its recording is complete once it reports the end)
    await caller.wait_ended(10)
    await session.wait_ended(10)

    at_caller, at_callee = parties.heard(caller, "closed"), parties.heard(callee, "closed")
    detail = f"caller heard {at_caller}, callee heard {at_callee}"
    assert at_caller[CALLEE_HZ] > HEARD and at_callee[CALLER_HZ] > HEARD, detail
    assert at_caller[AGENT_HZ] < NOT_HEARD and at_callee[AGENT_HZ] < NOT_HEARD, detail
    # nothing of the call is left in Asterisk
    names = {c.id for c in await ari.channels.list()}
    assert not names & {session.id, *agent_channels}


async def test_disconnect_hangs_up_every_party(parties: Party) -> None:
    async def handler(call: CallSession) -> None:
        await call.connect(ring_time=10, to=parties.callee_endpoint)
        await asyncio.sleep(0.5)
        await call.disconnect()
        await call.disconnect()  # idempotent

    session, caller = await run_call(parties, handler)
    callee = await parties.callee_phone.next_incoming_call(10)
    await caller.wait_ended(10)
    await callee.wait_ended(10)
    await session.wait_ended(10)
    assert session.parties.state is PartyState.DISCONNECTED
    await asyncio.sleep(0.5)
    mine = [c.id for c in await parties.app.ari.channels.list() if c.id.startswith("voxtra-")]
    assert not [c for c in mine if c in session.context.channels or c == session.id]


async def test_connect_to_a_busy_callee_raises_and_keeps_the_caller_with_the_agent(
    parties: Party,
) -> None:
    outcome: list[BaseException] = []
    after = asyncio.Event()

    async def handler(call: CallSession) -> None:
        try:
            await call.connect(ring_time=5, to="Local/busy@voxtra-test")
        except CallBusy as exc:
            outcome.append(exc)
        await parties.window("after")
        after.set()
        await call.hangup()

    session, caller = await run_call(parties, handler)
    await asyncio.wait_for(after.wait(), 20)
    await caller.wait_ended(10)
    assert outcome and isinstance(outcome[0], CallBusy), outcome
    assert session.parties.state is PartyState.ALONE
    at_caller = parties.heard(caller, "after")
    assert at_caller[AGENT_HZ] > HEARD, f"the caller is still with the agent: {at_caller}"
    assert parties.agent_heard("after")[CALLER_HZ] > HEARD


async def test_front_desk_example_connects_the_caller_and_leaves(parties: Party) -> None:
    """examples/front_desk.py on a real call: the caller presses 1, the agent dials
    the number they called (the route's endpoint template), whispers, closes."""
    spec = importlib.util.spec_from_file_location("front_desk", EXAMPLES / "front_desk.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def desk(call: CallSession) -> None:
        call.context.called_number = "201"  # as if the caller had dialled 201
        await example.front_desk(call)

    template = f"PJSIP/sipcaller/sip:{{number}}@127.0.0.1:{parties.callee_phone.port}"
    session = await parties.app.originate(
        f"PJSIP/sipcaller/sip:caller@127.0.0.1:{parties.caller_phone.port}",
        handler=desk,
        timeout=10,
        metadata={"connect_endpoint": template},
    )
    caller = await parties.caller_phone.next_incoming_call(10)
    await caller.wait_answered(10)
    await asyncio.sleep(1.0)  # into the "press 1" prompt
    await caller.send_dtmf("1")
    callee = await parties.callee_phone.next_incoming_call(15)
    deadline = time.monotonic() + 15
    while session.parties.state is not PartyState.CLOSED and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert session.parties.state is PartyState.CLOSED
    assert session.parties.endpoint == template.replace("{number}", "201")
    await parties.window("closed")
    await callee.hangup()
    await callee.wait_ended(10)
    await caller.wait_ended(10)
    at_caller, at_callee = parties.heard(caller, "closed"), parties.heard(callee, "closed")
    assert at_caller[CALLEE_HZ] > HEARD and at_callee[CALLER_HZ] > HEARD, (at_caller, at_callee)


class ToneTTS:
    """A TTS that "speaks" any text as 1.2 s of the agent's 1,300 Hz tone."""

    name = "tone-tts"
    sample_rate = 8000

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        tone = audio.tone(AGENT_HZ, 1.2, amplitude=0.3).astype("<i2").tobytes()
        for i in range(0, len(tone), 1600):
            yield AudioChunk(tone[i : i + 1600], 8000, Codec.PCM16)


async def test_warm_transfer_holds_the_caller_briefs_the_target_and_connects_them(
    parties: Party,
) -> None:
    parties.app.voice = VoiceConfig(tts=ToneTTS())
    done = asyncio.Event()
    agent_channels: list[str] = []

    async def handler(call: CallSession) -> None:
        await call.media()
        await asyncio.sleep(0.5)

        async def briefing(c: CallSession) -> bool:
            start = time.time()
            await c.say("A caller about an invoice.", interruptible=False)
            parties.windows["briefing"] = (start, time.time())
            agent_channels.append(str(c.media_path.channel_id))
            return True

        await call.transfer_to(parties.callee_endpoint, warm=True, briefing=briefing)
        done.set()
        await parties.window("after")

    session = await parties.app.originate(
        f"PJSIP/sipcaller/sip:caller@127.0.0.1:{parties.caller_phone.port}",
        handler=handler,
        timeout=10,
    )
    caller = await parties.caller_phone.next_incoming_call(10)
    target = await parties.callee_phone.next_incoming_call(10)
    await asyncio.wait_for(done.wait(), 20)
    assert await gone(parties.app.ari.channels.get, agent_channels[0])
    await parties.until_window("after")
    assert not session.ended
    await caller.hangup()
    await caller.wait_ended(10)
    await target.wait_ended(10)

    at_caller, at_target = parties.heard(caller, "briefing"), parties.heard(target, "briefing")
    assert at_target[AGENT_HZ] > HEARD and at_target[CALLER_HZ] < NOT_HEARD, at_target
    assert at_caller[CALLEE_HZ] < NOT_HEARD, at_caller
    assert at_caller[AGENT_HZ] < at_target[AGENT_HZ] - 20, (at_caller, at_target)
    samples, rate = audio.read_wav(caller.recording_path)  # type: ignore[arg-type]
    start, end = parties.windows["briefing"]
    a, b = caller.recording_offset(start), caller.recording_offset(end)
    held = samples[round(a * rate) : round(b * rate)]
    # Not silence (about -110 dBFS in these recordings): the sandbox's music on hold,
    # whose files fade in (measured: -76 to -44 dBFS over its first second).
    assert audio.rms_dbfs(held) > -70, "the caller heard music on hold"
    at_caller, at_target = parties.heard(caller, "after"), parties.heard(target, "after")
    assert at_caller[CALLEE_HZ] > HEARD and at_target[CALLER_HZ] > HEARD, (at_caller, at_target)
    assert at_caller[AGENT_HZ] < NOT_HEARD and at_target[AGENT_HZ] < NOT_HEARD


async def test_party_audio_gives_each_party_alone_labelled(parties: Party) -> None:
    labelled: dict[str, list[tuple[float, bytes]]] = {"caller": [], "callee": []}
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.connect(ring_time=10, to=parties.callee_endpoint)

        async def keep() -> None:
            async for party, chunk in call.party_audio(codec="pcm16", sample_rate=8000):
                labelled[party].append((time.time(), chunk.data))

        call.spawn(keep())
        await asyncio.sleep(0.5)
        await parties.window("barge")
        done.set()
        await call.disconnect()

    await run_call(parties, handler)
    await asyncio.wait_for(done.wait(), 20)
    start, end = parties.windows["barge"]
    levels = {}
    for party, chunks in labelled.items():
        pcm = b"".join(data for t, data in chunks if start <= t <= end)
        samples = np.frombuffer(pcm, dtype="<i2")
        levels[party] = {f: level(samples, 8000, f) for f in (CALLER_HZ, CALLEE_HZ, AGENT_HZ)}
    caller, callee = levels["caller"], levels["callee"]
    assert caller[CALLER_HZ] > HEARD and callee[CALLEE_HZ] > HEARD, levels
    # each stream is that party alone: not the other, not the agent barging in
    assert caller[CALLEE_HZ] < NOT_HEARD and caller[AGENT_HZ] < NOT_HEARD, levels
    assert callee[CALLER_HZ] < NOT_HEARD and callee[AGENT_HZ] < NOT_HEARD, levels


async def test_a_supervisor_spies_whispers_and_barges_on_an_agent_call(parties: Party) -> None:
    """The callee's phone (880 Hz) is the supervisor here, on a call between the caller
    (440 Hz) and the AI agent (1,300 Hz): who hears the supervisor, mode by mode."""
    started = asyncio.Event()
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        started.set()
        await done.wait()
        await call.hangup()

    session, caller = await run_call(parties, handler)
    await asyncio.wait_for(started.wait(), 10)
    supervision = await parties.app.supervise(
        session.id, parties.callee_endpoint, "spy", ring_time=10
    )
    boss = await parties.callee_phone.next_incoming_call(10)
    await boss.wait_answered(10)
    await parties.window("spy")
    for name, mode in (
        ("whisper-agent", SupervisorMode("whisper", "agent")),
        ("whisper-caller", SupervisorMode("whisper", "caller")),
        ("barge", SupervisorMode("barge")),
    ):
        await supervision.set_mode(mode)
        await parties.window(name)
    await boss.send_dtmf("1")  # the supervisor's own key for spy (RFC 4733 from its phone)
    deadline = time.monotonic() + 10
    while str(supervision.mode) != "spy" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert str(supervision.mode) == "spy"
    await supervision.end()
    await boss.wait_ended(10)
    done.set()
    await caller.wait_ended(10)

    for name, caller_hears, agent_hears in (
        ("spy", False, False),
        ("whisper-agent", False, True),
        ("whisper-caller", True, False),
        ("barge", True, True),
    ):
        at_caller, at_boss = parties.heard(caller, name), parties.heard(boss, name)
        agent = parties.agent_heard(name)
        detail = f"{name}: caller {at_caller}, agent {agent}, supervisor {at_boss}"
        # the supervisor hears both sides in every mode
        assert at_boss[CALLER_HZ] > HEARD and at_boss[AGENT_HZ] > HEARD, detail
        assert (at_caller[CALLEE_HZ] > HEARD) is caller_hears, detail
        assert (at_caller[CALLEE_HZ] < NOT_HEARD) is not caller_hears, detail
        assert (agent[CALLEE_HZ] > HEARD) is agent_hears, detail
        assert (agent[CALLEE_HZ] < NOT_HEARD) is not agent_hears, detail


async def test_the_callee_hanging_up_leaves_the_caller_with_the_agent(parties: Party) -> None:
    back = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.connect(ring_time=10, to=parties.callee_endpoint)
        await call.spy()
        await parties.window("spy")
        while call.parties.state is not PartyState.ALONE:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await parties.window("back")
        back.set()
        await call.hangup()

    _, caller = await run_call(parties, handler)
    callee = await parties.callee_phone.next_incoming_call(10)
    await parties.until_window("spy")
    await callee.hangup()
    await asyncio.wait_for(back.wait(), 15)
    await caller.wait_ended(10)
    at_caller = parties.heard(caller, "spy")
    assert at_caller[AGENT_HZ] < NOT_HEARD and at_caller[CALLEE_HZ] > HEARD, at_caller
    at_caller = parties.heard(caller, "back")
    # with the agent again (heard: spy was the mode with a callee, not now), callee gone
    assert at_caller[AGENT_HZ] > HEARD and at_caller[CALLEE_HZ] < NOT_HEARD, at_caller
    agent = parties.agent_heard("back")
    assert agent[CALLER_HZ] > HEARD and agent[CALLEE_HZ] < NOT_HEARD, agent
