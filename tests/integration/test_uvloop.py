"""`voxtra run` on uvloop (settings.event_loop): a real call's control and media.

The app runs through ``VoxtraApp.run()`` in a child process, as ``voxtra run`` runs it,
with ``VOXTRA_EVENT_LOOP=uvloop``: it originates a call to Asterisk's Echo(), sends a
tone over ExternalMedia on the media engine and reads it back, hangs up and stops on
SIGTERM. The loop's own pieces the app leans on (timers for the 20 ms ticker, socket
readers, signal handlers, the ARI connections) all take part.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from voxtra.ari.client import AriClient
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = [pytest.mark.asterisk]

uvloop = pytest.importorskip("uvloop")

_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys
    import numpy as np
    from voxtra.app import VoxtraApp
    from voxtra.media.frames import AudioChunk, Codec

    out = sys.argv[1]
    app = VoxtraApp(environ=os.environ)
    result = {}

    async def talk(call):
        await call.answer()
        t = np.arange(8000) / 8000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
        stream = call.audio_stream(codec="pcm16", sample_rate=8000)
        await call.send_audio(AudioChunk(tone, 8000, Codec.PCM16))  # 1 s
        loud = frames = 0
        async for chunk in stream:
            frames += 1
            pcm = np.frombuffer(chunk.data, "<i2").astype(np.float64)
            loud += bool(np.sqrt(np.mean(pcm * pcm)) > 2000)
            if frames == 75:
                break
        result.update(frames=frames, loud=loud)
        await call.hangup()

    @app.on_startup
    async def call_echo():
        result["loop"] = type(asyncio.get_running_loop()).__module__

        async def go():
            try:
                call = await app.originate("Local/echo@voxtra-test", handler=talk, timeout=10)
                await call.wait_ended(10)
                result["end"] = call.end_reason
            except BaseException as exc:
                result["error"] = repr(exc)
            finally:
                with open(out, "w") as f:
                    json.dump(result, f)
                os.kill(os.getpid(), signal.SIGTERM)

        asyncio.get_running_loop().create_task(go())

    app.run()
    """
)


async def test_an_app_on_uvloop_runs_a_call_with_media(
    asterisk: AsteriskTarget, tmp_path: Path
) -> None:
    name = f"voxtra-uvloop-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "VOXTRA_ARI_URL": asterisk.ari_url,
        "VOXTRA_USERNAME": asterisk.username,
        "VOXTRA_PASSWORD": asterisk.password,
        "VOXTRA_APP_NAME": name,
        "VOXTRA_EVENT_LOOP": "uvloop",
        "VOXTRA_SPOOL_DIR": str(tmp_path / "spool"),
        "VOXTRA_RECORDINGS_DIR": str(tmp_path / "rec"),
    }
    out = tmp_path / "result.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(out), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    result = json.loads(out.read_text())
    assert result.get("error") is None, result
    assert result["loop"].startswith("uvloop")
    # Echo() returns the tone: most of the 75 frames read (1.5 s) carry it.
    assert result["frames"] == 75
    assert 46 <= result["loud"] <= 51, result  # the 1 s tone, give or take a frame
    async with AriClient(asterisk.ari_url, asterisk.username, asterisk.password) as ari:
        left = [ch for ch in await ari.channels.list() if name in (ch.dialplan.app_data or "")]
    assert left == []
