"""Calls of one app share one RTP socket (issue 15), through a whole app on FakeAsterisk.

FakeAsterisk, like Asterisk, gives each ExternalMedia channel an RTP end of its own
(its own port); the app gives every channel the same ``external_host`` and routes each
datagram by the end that sent it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from voxtra import CallSession, VoxtraApp
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.rtp_transport import RtpTransport
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_two_calls_one_socket_each_hears_its_own_caller(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="shared-rtp-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        recordings_dir=str(tmp_path / "recordings"),
        media={"engine": False},  # the per-call path on the shared socket
    )
    transports: dict[str, RtpTransport] = {}
    heard: dict[str, set[bytes]] = {}

    @app.default
    async def talk(call: CallSession) -> None:
        await call.answer()
        media = await call.media()
        assert isinstance(media, RtpTransport)
        number = call.called_number or ""
        transports[number] = media
        got = heard.setdefault(number, set())
        mark = b"\x11" if number == "100" else b"\x22"
        async for chunk in call.audio_stream():
            got.add(chunk.data[:1])
            await call.send_audio(AudioChunk(mark * 160, 8000, Codec.ULAW))

    async with fake_asterisk.serve(app):
        a = await fake_asterisk.incoming(extension="100")
        b = await fake_asterisk.incoming(extension="200")
        await fake_asterisk.wait_until(lambda: len(transports) == 2)
        ends = {
            c.variables["UNICASTRTP_LOCAL_PORT"]: c.rtp
            for c in fake_asterisk.channels.values()
            if c.rtp is not None
        }
        assert len(ends) == 2  # Asterisk's side: a port per channel
        ta, tb = transports["100"], transports["200"]
        assert ta.endpoint is not None and ta.endpoint is tb.endpoint  # ours: one socket
        assert ta.local_address == tb.local_address
        end_a = next(e for e in ends.values() if e is not None and _is(ta, e))
        end_b = next(e for e in ends.values() if e is not None and _is(tb, e))
        end_a.queue_audio(b"\x0a" * 1600)
        end_b.queue_audio(b"\x0b" * 1600)
        await fake_asterisk.wait_until(
            lambda: b"\x0a" in heard["100"] and b"\x0b" in heard["200"], timeout=5
        )
        await fake_asterisk.wait_until(
            lambda: b"\x11" in end_a.heard and b"\x22" in end_b.heard, timeout=5
        )
        assert b"\x0b" not in heard["100"] and b"\x0a" not in heard["200"]
        assert b"\x22" not in end_a.heard and b"\x11" not in end_b.heard
        assert ta.endpoint.stats.dropped_foreign_source == 0
        endpoint = ta.endpoint
        await a.hang_up()
        await b.hang_up()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
    assert endpoint.closed  # closed with its last call


def _is(tr: RtpTransport, end: object) -> bool:
    """Whether ``end`` (a FakeRtpEnd) is the peer ``tr`` latched."""
    local = getattr(end, "local", None)
    return tr.remote is not None and local is not None and tr.remote[1] == local[1]
