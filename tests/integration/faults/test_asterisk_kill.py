"""Asterisk killed (SIGKILL) under 20 live calls with media and recordings, then restarted.

Kills the Asterisk the ``asterisk`` fixture points at: run it against one nobody else
uses (CI, or a sandbox of its own: ``VOXTRA_CACHE_DIR`` in a network namespace). It
refuses to kill an Asterisk on which other Stasis apps are registered.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voxtra.ari.aiohttp_transport import REST_POOL_LIMIT, AiohttpTransport
from voxtra.testing.asterisk import SandboxUnavailable
from voxtra.testing.faults import asterisk_kill
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = [pytest.mark.faults, pytest.mark.asterisk]

CALLS = 20
#: Asterisk stays dead this long before it is started again (plus ~2 s to boot): long
#: enough for the app's reconnect backoff to grow past the 5 s allowed once it is back.
DOWN_FOR = 8.0


@pytest.mark.parametrize(
    ("transport", "codec", "calls", "down_for"),
    [
        pytest.param("rtp", "ulaw", CALLS, DOWN_FOR, id="rtp"),
        # Fewer calls, no extra downtime: the transport's own behaviour is the point.
        # These media connections reset the moment Asterisk dies, long before the
        # events reconnect: audio_stream() ends, and the handler's next request must
        # wait for the reconcile and raise CallEnded, not AriConnectionError, and the
        # recording must be stopped and delivered once Asterisk is back.
        pytest.param(
            "websocket",
            "ulaw",
            5,
            0.0,
            id="websocket",
        ),
        pytest.param(
            "audiosocket",
            "slin",
            5,
            0.0,
            id="audiosocket",
        ),
    ],
)
async def test_sigkill_under_live_calls_leaves_nothing_and_new_calls_work(
    asterisk: AsteriskTarget,
    tmp_path: Path,
    transport: str,
    codec: str,
    calls: int,
    down_for: float,
) -> None:
    if asterisk.sandbox is None:
        pytest.skip("killing Asterisk needs the sandbox, not an external PBX")
    try:
        report = await asterisk_kill(
            asterisk.sandbox,
            calls=calls,
            workdir=str(tmp_path),
            down_for=down_for,
            media={"transport": transport, "codec": codec},
            # In CI nobody else uses the sandbox: an app registered there is a leftover.
            allow_shared=bool(os.environ.get("CI")),
        )
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    print(report)
    assert report.attached == calls, report.notes
    # Every call's handler learnt that its call ended, the normal way; each call's
    # hangup callbacks ran once.
    assert report.outcomes["CallEnded"] >= calls, report.outcomes
    assert set(report.hangup_callbacks.values()) == {1}, report.hangup_callbacks
    assert report.ended_after_back_s is not None, "old sessions never ended"
    # A new call has audio both ways soon after Asterisk is back.
    assert report.new_call_after_back_s is not None, report.new_call_error
    assert report.new_call_after_back_s < 5.0
    # Nothing left over: sessions, tasks, media sockets, channels, bridges.
    assert report.sessions_left == 0
    assert report.tasks_leaked == []
    before, after = report.sockets_before, report.sockets_after
    assert after["udp"] == before["udp"], (before, after)
    assert after["tcp_other"] == before["tcp_other"], (before, after)
    # The REST keep-alive pool, aiohttp's (events and downloads beside the lean pool)
    # and the events socket.
    transport = AiohttpTransport("http://127.0.0.1:8088", "x")  # the app's default
    lean = REST_POOL_LIMIT if transport.lean_rest else 0
    assert after["tcp_ari"] <= lean + transport.aiohttp_limit + 1, (before, after)
    assert report.channels_left == [] and report.bridges_left == []
    # Recordings running at the kill: each delivered once, as a WAV any reader takes,
    # with what reached Asterisk's disk. Asterisk writes through a 32 KB buffer (about
    # 2 s of 8 kHz audio) and sets the WAV sizes only when it closes the file: killed,
    # it left zeros there (strict readers refused the file) and lost the buffer's tail.
    states = list(report.recordings.values())
    assert len(states) == calls
    assert all(s.startswith("delivered ") and s.endswith(" s") for s in states), states
    assert report.delivered_twice == []
