"""The platform against the real Asterisk sandbox: a call placed over the HTTP API to a
SIP phone, end to end, its live status events, transcript (the embedded STT) and
recording read back from the API.

The phone is the scripted SIP caller (pjsua2) on a free port; the API is asked for
``sip:test@127.0.0.1:PORT``, sent through the sandbox's ``sipcaller`` endpoint
(``platform.sip_uri_endpoint``). Once answered, the phone says one sentence (espeak-ng
at 150 words per minute); the route listens for one utterance (pocketsphinx, WebRTC
VAD) and hangs up: the call lasts a few seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.platform.serve import PlatformServer
from voxtra.testing.audio import synthesize_wav
from voxtra.testing.sipcaller import SipCaller

if TYPE_CHECKING:
    from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _until(check: Any, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await check()
        if value or loop.time() > end:
            return value
        await asyncio.sleep(0.1)


async def test_an_api_call_to_a_sandbox_extension_end_to_end(
    asterisk: AsteriskTarget, tmp_path: Path
) -> None:
    from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
    from voxtra.providers.webrtc_vad import WebRtcVAD

    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        f"voxtra-platform-{uuid.uuid4().hex[:8]}",
        environ={},
        handler_deadline=2.0,
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        stt=PocketSphinxSTT(),
        vad=WebRtcVAD(),
        platform={
            "tokens": [{"name": "it", "token": TOKEN, "scopes": ["admin"]}],
            "sip_uri_endpoint": "sipcaller",
        },
    )
    heard: list[str] = []

    @app.route(name="listener")
    async def listener(call: CallSession) -> None:
        turn = await call.listen(timeout=15)
        heard.append(turn.text if turn is not None else "")
        await call.hangup()

    sentence = await synthesize_wav("what are your opening hours", tmp_path / "ask.wav")
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/platform.db", port=0)
    await server.start()
    try:
        async with (
            SipCaller(workdir=tmp_path) as phone,
            httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=40) as client,
        ):
            assert (await client.get("/readyz")).json()["ari"] is True
            await phone.listen(record=False)  # answers the next incoming call
            created = await client.post(
                "/v1/calls",
                json={
                    "to": f"sip:test@127.0.0.1:{phone.port}",
                    "route": "listener",
                    "record": True,
                },
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert created.status_code == 201, created.text
            call_id = created.json()["call_id"]
            statuses: list[str] = []
            ringing = await phone.next_incoming_call(10)
            await ringing.wait_answered(10)
            await ringing.wait_media(10)
            await asyncio.sleep(0.5)  # the route's pipeline attaches its media
            await ringing.play(sentence)
            async with client.stream("GET", f"/v1/calls/{call_id}/events") as events:
                async for line in events.aiter_lines():
                    if line.startswith("event: status"):
                        statuses.append("?")
                    elif line.startswith("data: ") and statuses and statuses[-1] == "?":
                        statuses[-1] = httpx.Response(200, content=line[6:]).json()["status"]
            assert statuses == ["queued", "dialing", "in_progress", "completed"]
            assert heard and heard[0], heard

            async def recorded() -> dict[str, Any] | None:
                await server.platform.recorder.flush()
                detail = (await client.get(f"/v1/calls/{call_id}")).json()
                return detail if detail["recording"] else None

            detail = await _until(recorded, 15)
            assert detail is not None, "no recording link"
            assert detail["status"] == "completed" and detail["duration"] > 0
            assert detail["endpoint"] == f"PJSIP/sipcaller/sip:test@127.0.0.1:{phone.port}"
            transcript = (await client.get(f"/v1/calls/{call_id}/transcript")).json()["turns"]
            assert [t["speaker"] for t in transcript] == ["caller"]
            assert transcript[0]["text"] == heard[0]
            wav = await client.get(f"/v1/calls/{call_id}/recording", params={"download": 1})
            assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
            assert len(wav.content) > 8000  # more than half a second of 8 kHz audio
    finally:
        await server.stop()
