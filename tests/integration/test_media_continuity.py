"""A SIP phone keeps getting media while the agent says nothing.

The app (its own Stasis app name) calls a pjsua2 phone, attaches media and then sends
nothing for the whole call. Measured before the fix: the phone got no RTP at all on
any transport (0 packets in 5 s), which carriers, SBCs and NAT bindings end a call or
pinhole for. Watched from the phone's answer on: the first packet comes once the app
has attached media (about 50 ms), then one every 20 ms (measured: 500 of 500 in 10 s,
no stretch over about 20 ms, on each transport).

What is measured, and why this way: what the phone *receives*, on the wire. Its
recording cannot show it (pjsua2's jitter buffer fills missing packets, so silence
and nothing sound alike), so the phone's own RTP receive counter (pjsua2
``rtcp.rxStat.pkt``, every packet that reached its RTP socket) is sampled about every
10 ms in the phone process (``SipCall.watch_rx``). Two samples with the same count
prove no packet arrived between them, so the longest such stretch is a gap the phone
really saw; the count over the window shows a packet per 20 ms on average. Bounds
are generous for a loaded 2-core CI machine (a 20 ms stream has no stretch over about
40 ms when all is well; the old code's stretch was the whole call).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.testing.pytest_plugin import AsteriskTarget
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

StartApp = Callable[[str, str], Awaitable[VoxtraApp]]


@pytest.fixture
async def start_app(asterisk: AsteriskTarget) -> AsyncIterator[StartApp]:
    started: list[VoxtraApp] = []

    async def start(transport: str, codec: str) -> VoxtraApp:
        app = VoxtraApp(
            asterisk.ari_url,
            asterisk.username,
            asterisk.password,
            f"voxtra-cont-{uuid.uuid4().hex[:8]}",
            environ={},
            handler_deadline=2.0,
            media={"transport": transport, "codec": codec},
        )
        await app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop()


def longest_standstill(samples: list[tuple[float, int]]) -> float:
    """Longest time between two samples that saw the same packet count."""
    longest = 0.0
    since_t, since_n = samples[0]
    for t, n in samples:
        if n != since_n:
            since_t, since_n = t, n
        longest = max(longest, t - since_t)
    return longest


@pytest.mark.parametrize(
    ("transport", "codec", "seconds"),
    [
        # The 10 s on the default transport; the other two carry the same
        # property in less CI time.
        ("rtp", "ulaw", 10.0),
        ("websocket", "ulaw", 4.0),
        ("audiosocket", "slin", 4.0),
    ],
)
async def test_the_phone_gets_a_frame_every_20ms_while_the_agent_is_silent(
    start_app: StartApp, tmp_path: Path, transport: str, codec: str, seconds: float
) -> None:
    app = await start_app(transport, codec)
    attached = asyncio.Event()
    done = asyncio.Event()
    stats: list[str] = []

    async def silent_agent(call: CallSession) -> None:
        media = await call.media()
        attached.set()
        await done.wait()  # says nothing at all
        stats.append(str(media.stats))
        await call.hangup()

    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(record=False)
        await app.originate(
            f"PJSIP/sipcaller/sip:test@127.0.0.1:{phone.port}", handler=silent_agent, timeout=10
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        await call.watch_rx()  # from the answer on: the whole call
        await asyncio.sleep(seconds)
        samples = await call.rx_samples()
        assert attached.is_set()
        done.set()
        await call.wait_ended(10)

    assert len(samples) > seconds * 20, "the phone process sampled too rarely to judge"
    assert call.answered_at is not None
    # Media starts once the app has attached it (about 50 ms after the answer here).
    first = next((i for i, (_, n) in enumerate(samples) if n > samples[0][1]), None)
    assert first is not None, f"no RTP at all in {seconds} s; transport {stats}"
    assert samples[first][0] - call.answered_at < 2.0
    samples = samples[first:]
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    frames = n1 - n0
    expected = (t1 - t0) / 0.020
    gap = longest_standstill(samples)
    detail = f"{frames} packets in {t1 - t0:.2f} s (~{expected:.0f} due), gap {gap * 1000:.0f} ms"
    assert frames >= 0.9 * expected, f"{detail}; transport {stats}"
    assert gap <= 0.150, f"{detail}; transport {stats}"
