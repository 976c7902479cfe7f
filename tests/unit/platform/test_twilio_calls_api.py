"""The platform's calls on the Twilio backend: placed through ``POST /v1/calls`` to a
:class:`~voxtra.testing.fakes.twilio.TwilioPhone` through
:class:`~voxtra.testing.fakes.twilio.FakeTwilio` (the real ``twilio`` SDK, real
sockets: the API, webhook, status callbacks and Media Stream on one ``PlatformServer``),
stored like Asterisk's calls (status, parties, transcript, per-turn latency, recording),
busy / no-answer / failed from Twilio's status callbacks, hung up and transferred
through the API; inbound Twilio calls stored too; ``to`` checked per backend.

Each call is a second or two of audio (the caller's one-second tone, the agent's
scripted answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import struct
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_helpers import READ, WRITE, auth, build_app

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession
from voxtra.pipeline.io import MonotonicClock
from voxtra.platform.engine import admin, service
from voxtra.platform.schemas import CallRequest
from voxtra.platform.serve import PlatformServer
from voxtra.platform.store.calls import IdempotencyKey
from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS
from voxtra.testing.fakes.twilio import FakeTwilio, TwilioPhone
from voxtra.twilio import TwilioBackend

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

FROM = "+15550001"


@dataclass
class Rig:
    app: VoxtraApp
    server: PlatformServer
    backend: TwilioBackend
    twilio: FakeTwilio
    client: httpx.AsyncClient
    handled: list[CallSession]

    async def place(self, **body: Any) -> str:
        created = await self.client.post("/v1/calls", json=body, headers=auth(WRITE))
        assert created.status_code == 201, created.text
        return str(created.json()["call_id"])

    async def detail(self, call_id: str) -> dict[str, Any]:
        await self.server.platform.recorder.flush()
        found = await self.client.get(f"/v1/calls/{call_id}", headers=auth(READ))
        assert found.status_code == 200, found.text
        return dict(found.json())

    async def wait_for(
        self, call_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """The call's detail once ``done(detail)`` (polled at 10 a second: the API's
        rate limit is 20 a second per token)."""
        detail: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            while not done(detail := await self.detail(call_id)):
                await asyncio.sleep(0.1)
        return detail

    async def answered(self, timeout: float = 10.0) -> TwilioPhone:
        return await asyncio.wait_for(self.twilio.answered.get(), timeout)

    async def events(self, call_id: str) -> list[tuple[str, dict[str, Any]]]:
        await self.server.platform.recorder.flush()
        store = self.server.platform.store
        return [(e.kind, e.data) for e in await store.events_after(call_id, 0)]


def tone_wav(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    """A loud 440 Hz tone: speech to EnergyVAD, the caller's question to ScriptedSTT."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return path


def twilio_settings(twilio: FakeTwilio, **extra: Any) -> dict[str, Any]:
    return {
        "account_sid": twilio.account_sid,
        "auth_token": twilio.auth_token,
        "public_url": "http://127.0.0.1:1",  # replaced once the server listens
        "api_base_url": twilio.url,
        "from_number": FROM,
        **extra,
    }


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path,
    twilio: FakeTwilio,
    fake_asterisk: FakeAsterisk | None,
    configure: Callable[[VoxtraApp, list[CallSession]], None] | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    """``voxtra serve``'s server (API + Twilio endpoints on one socket) for an app with
    Twilio configured; on FakeAsterisk, or Twilio-only when ``fake_asterisk`` is None
    (``twilio.without_asterisk``: the server gives the app ``NoAsterisk``)."""
    twilio_extra = {} if fake_asterisk is not None else {"without_asterisk": True}
    app = build_app(tmp_path, twilio=twilio_settings(twilio, **twilio_extra), **options)
    handled: list[CallSession] = []

    @app.route("1000", name="hold")
    async def hold(call: CallSession) -> None:
        handled.append(call)
        await call.answer()
        await call.wait_ended()

    if configure is not None:
        configure(app, handled)
    if fake_asterisk is not None:
        app.use_transport(fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    assert server.twilio is not None
    await server.start()
    server.twilio.public_url = server.url
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            yield Rig(app, server, server.twilio, twilio, client, handled)
    finally:
        for phone_call in list(twilio.calls.values()):
            if phone_call.phone is not None:
                await phone_call.phone.close()
        await server.stop()


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake


def _agent(app: VoxtraApp, handled: list[CallSession]) -> None:
    @app.route("2000", name="agent")
    async def agent(call: CallSession) -> None:
        handled.append(call)
        await call.converse()


async def test_an_api_call_through_twilio_is_stored_with_transcript_latency_and_recording(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    clock = MonotonicClock()
    twilio.script("+15550123", "answer")
    question = tone_wav(tmp_path / "tone.wav")
    async with served(
        tmp_path,
        twilio,
        fake_asterisk,
        _agent,
        stt=ScriptedSTT(["what time is it"], clock, delay=0.01),
        llm=ScriptedLLM([Reply(["It is noon."])], clock, delay=0),
        tts=ScriptedTTS(clock, ms_per_char=10, first_byte=0),
        vad=EnergyVAD(),
    ) as rig:
        call_id = await rig.place(to="+15550123", route="agent", record=True, backend="twilio")
        phone = await rig.answered()
        phone.say(question)

        async def turns() -> list[dict[str, Any]]:
            await rig.server.platform.recorder.flush()
            got = await rig.client.get(f"/v1/calls/{call_id}/transcript", headers=auth(READ))
            assert got.status_code == 200, got.text
            return list(got.json()["turns"])

        async with asyncio.timeout(15):
            while len(await turns()) < 2:
                await asyncio.sleep(0.1)
        await phone.hangup()
        detail = await rig.wait_for(call_id, lambda d: bool(d["recording"]))
        transcript = await turns()
        events = await rig.events(call_id)
        recording = await rig.client.get(
            f"/v1/calls/{call_id}/recording", params={"download": 1}, headers=auth(READ)
        )

    assert detail["status"] == "completed"
    assert detail["backend"] == "twilio" and detail["direction"] == "outbound"
    assert (detail["to"], detail["from"]) == ("+15550123", FROM)
    assert detail["endpoint"] == "+15550123"
    assert detail["channel_id"] == phone.call.sid  # the CallSid
    assert detail["answered_at"] is not None and detail["duration"] > 0
    assert rig.handled and rig.handled[0].backend == "twilio"
    # Twilio placed the call with the caller id and the app's own webhooks.
    assert (phone.call.from_, phone.call.url) == (FROM, rig.backend.voice_url)

    assert [(t["speaker"], t["text"]) for t in transcript] == [
        ("caller", "what time is it"),
        ("agent", "It is noon."),
    ]
    assert transcript[1]["latency"]["total_ms"] is not None
    assert set(transcript[1]["latency"]) >= {"stt_ms", "llm_ms", "tts_ms", "total_ms"}
    assert detail["metrics"]["turns"] == 2
    assert detail["metrics"]["latency_ms"]["total_ms"]["p50"] is not None

    statuses = [data["status"] for kind, data in events if kind == "status"]
    # "ringing" is written unless the answer's in_progress came first (the two race)
    assert [s for s in statuses if s != "ringing"] == [
        "queued",
        "dialing",
        "in_progress",
        "completed",
    ]
    assert "transcript" in {kind for kind, _ in events}

    # Twilio's recording, fetched and delivered through the app's sink, served by the API.
    assert recording.status_code == 200 and recording.content[:4] == b"RIFF"
    with wave.open(io.BytesIO(recording.content)) as reader:
        assert reader.getnchannels() == 2  # Twilio's dual recording: caller, app
        assert reader.getnframes() / reader.getframerate() > 1.0


async def test_busy_no_answer_and_failed_come_from_twilios_status_callbacks(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    outcomes = {"+15550124": "busy", "+15550125": "no-answer", "+15550126": "failed"}
    for number, outcome in outcomes.items():
        twilio.script(number, outcome)
    async with served(tmp_path, twilio, fake_asterisk) as rig:
        ids = {
            number: await rig.place(to=number, route="hold", backend="twilio")
            for number in outcomes
        }
        final = {"busy", "no_answer", "failed", "completed", "canceled"}
        details = {
            number: await rig.wait_for(call_id, lambda d: d["status"] in final)
            for number, call_id in ids.items()
        }
    assert {n: d["status"] for n, d in details.items()} == {
        "+15550124": "busy",
        "+15550125": "no_answer",
        "+15550126": "failed",
    }
    for number, detail in details.items():
        assert detail["backend"] == "twilio"
        assert detail["duration"] == 0 and detail["ended_at"] is not None
        assert detail["answered_at"] is None
        assert f"Twilio: {outcomes[number]}" in detail["error"]
    assert not rig.handled  # nobody answered


async def test_a_call_twilio_refuses_to_place_ends_failed_not_dialing(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # calls.create answered 400 (error 21211): before, the SDK's TwilioRestException
    # escaped the dialling task and the call stayed "dialing" for ever.
    twilio.script("+15550127", "refused")
    async with served(tmp_path, twilio, fake_asterisk) as rig:
        call_id = await rig.place(to="+15550127", route="hold", backend="twilio")
        final = {"busy", "no_answer", "failed", "completed", "canceled"}
        detail = await rig.wait_for(call_id, lambda d: d["status"] in final)
    assert detail["status"] == "failed" and detail["ended_at"] is not None
    assert "21211" in detail["error"] and "Invalid 'To' Phone Number" in detail["error"]
    assert not rig.handled


async def test_hangup_and_transfer_through_the_api_on_twilio_calls(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.script("+15550130", "answer")
    twilio.script("+15550131", "answer")
    async with served(tmp_path, twilio, fake_asterisk) as rig:
        hung = await rig.place(to="+15550130", route="hold", backend="twilio")
        first = await rig.answered()
        await rig.wait_for(hung, lambda d: d["status"] == "in_progress")
        done = await rig.client.post(f"/v1/calls/{hung}/hangup", headers=auth(WRITE))
        assert done.status_code == 200, done.text
        await first.wait_ended(5)
        hung_detail = await rig.wait_for(hung, lambda d: d["status"] == "completed")
        again = await rig.client.post(f"/v1/calls/{hung}/hangup", headers=auth(WRITE))

        moved = await rig.place(to="+15550131", route="hold", backend="twilio")
        second = await rig.answered()
        await rig.wait_for(moved, lambda d: d["status"] == "in_progress")
        refused = await rig.client.post(
            f"/v1/calls/{moved}/transfer", json={"target": "100@sandbox"}, headers=auth(WRITE)
        )
        transferred = await rig.client.post(
            f"/v1/calls/{moved}/transfer", json={"target": "+15550199"}, headers=auth(WRITE)
        )
        assert transferred.status_code == 200, transferred.text
        moved_detail = await rig.wait_for(moved, lambda d: d["status"] == "completed")
        events = await rig.events(moved)

    assert first.call.statuses == ["completed"]  # the REST hang-up
    assert hung_detail["end_reason"] is not None
    assert again.status_code == 409  # ended
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "target"
    assert (
        second.call.twiml_updates and "<Number>+15550199</Number>" in (second.call.twiml_updates[0])
    )
    assert moved_detail["end_reason"] == "transferred"
    assert ("transfer", {"target": "+15550199"}) in events


async def test_hanging_up_a_twilio_call_still_ringing_cancels_it_at_twilio(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.script("+15550140", "answer")
    twilio.ring_s = 10.0  # long enough to hang up while it rings
    async with served(tmp_path, twilio, fake_asterisk) as rig:
        call_id = await rig.place(to="+15550140", route="hold", backend="twilio")
        # "ringing": Twilio's status callback, through originate's on_ringing
        await rig.wait_for(call_id, lambda d: d["status"] == "ringing", timeout=5)
        done = await rig.client.post(f"/v1/calls/{call_id}/hangup", headers=auth(WRITE))
        await rig.wait_for(call_id, lambda d: d["status"] == "canceled", timeout=5)
        dialing = dict(rig.server.platform.calls.dialing)
    assert done.status_code == 200, done.text
    assert not dialing and not rig.handled
    (placed,) = [c for c in twilio.calls.values() if c.to == "+15550140"]
    assert placed.statuses == ["canceled"]  # cancelled at Twilio: it rings no more
    assert placed.phone is None  # never answered


async def test_inbound_twilio_calls_are_stored_like_asterisks(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    seen: list[CallSession] = []

    def configure(app: VoxtraApp, handled: list[CallSession]) -> None:
        @app.route("+15550100")
        async def desk(call: CallSession) -> None:
            seen.append(call)
            await call.answer()
            await call.gather(2, first_digit_timeout=5)

    async with served(tmp_path, twilio, fake_asterisk, configure) as rig:
        phone = await twilio.call_in(rig.backend.voice_url, to="+15550100", from_="+15550177")
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.01)
        await phone.press("42")
        await phone.wait_ended(5)
        record = None
        async with asyncio.timeout(10):
            while record is None or record.status != "completed":
                await rig.server.platform.recorder.flush()
                record = await rig.server.platform.store.by_channel(phone.call.sid)
                await asyncio.sleep(0.05)
        detail = await rig.detail(record.id)
        events = await rig.events(record.id)
        listed = await rig.client.get(
            "/v1/calls", params={"direction": "inbound"}, headers=auth(READ)
        )

    assert detail["backend"] == "twilio" and detail["direction"] == "inbound"
    assert (detail["to"], detail["from"]) == ("+15550100", "+15550177")
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses == ["in_progress", "completed"]
    assert [data["digit"] for kind, data in events if kind == "dtmf"] == ["4", "2"]
    assert detail["metrics"]["dtmf"] == 2
    assert [c["call_id"] for c in listed.json()["calls"]] == [record.id]


async def test_backend_and_to_are_checked_per_backend(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    async with served(tmp_path, twilio, fake_asterisk) as rig:

        async def problem(body: dict[str, Any]) -> tuple[int, str | None]:
            got = await rig.client.post("/v1/calls", json=body, headers=auth(WRITE))
            errors = got.json().get("errors") or [{}]
            return got.status_code, errors[0].get("field")

        on_twilio = {"route": "hold", "backend": "twilio"}
        checks = {
            "endpoint on twilio": await problem({"to": "PJSIP/alice", **on_twilio}),
            "context on twilio": await problem({"to": "Local/100@sandbox", **on_twilio}),
            "caller name on twilio": await problem(
                {"to": "+15550123", "from": "Desk <+15550001>", **on_twilio}
            ),
            "unknown backend": await problem({"to": "+15550123", "backend": "skype"}),
        }
        ok = {
            to: (
                await rig.client.post(
                    "/v1/calls", json={"to": to, **on_twilio}, headers=auth(WRITE)
                )
            ).status_code
            for to in ("+15550150", "sip:bob@example.com", "client:alice")
        }
        default = await rig.place(to="PJSIP/alice", route="hold")  # Asterisk: the default
        default_detail = await rig.wait_for(default, lambda d: d["status"] == "in_progress")
        # hung up now: left up, the server's stop would wait for the call to drain
        await rig.client.post(f"/v1/calls/{default}/hangup", headers=auth(WRITE))
    assert checks["endpoint on twilio"] == (422, "to")
    assert checks["context on twilio"] == (422, "to")
    assert checks["caller name on twilio"] == (422, "from")
    assert checks["unknown backend"][0] == 422
    assert ok == {"+15550150": 201, "sip:bob@example.com": 201, "client:alice": 201}
    assert default_detail["backend"] == "asterisk"


async def test_a_campaign_over_twilio(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.script("+15550161", "answer")
    twilio.script("+15550162", "busy")
    twilio.script("+15550163", "no-answer")

    def configure(app: VoxtraApp, handled: list[CallSession]) -> None:
        @app.route("3000", name="brief")
        async def brief(call: CallSession) -> None:
            handled.append(call)
            await call.answer()
            await asyncio.sleep(0.2)
            await call.hangup()

    async with served(tmp_path, twilio, fake_asterisk, configure) as rig:
        made = await rig.client.post(
            "/v1/campaigns",
            json={
                "route": "brief",
                "backend": "twilio",
                "retry": {"max_attempts": 1},
                "contacts": [
                    {"to": "+15550161", "variables": {"name": "Ann"}},
                    {"to": "+15550162"},
                    {"to": "+15550163"},
                ],
            },
            headers=auth(WRITE),
        )
        assert made.status_code == 201, made.text
        campaign_id = made.json()["campaign_id"]
        refused = await rig.client.post(
            "/v1/campaigns",
            json={"backend": "twilio", "contacts": [{"to": "+15550161"}, {"to": "PJSIP/bob"}]},
            headers=auth(WRITE),
        )
        async with asyncio.timeout(20):
            while True:
                got = await rig.client.get(f"/v1/campaigns/{campaign_id}", headers=auth(READ))
                if got.json()["status"] == "finished":
                    break
                await asyncio.sleep(0.1)
        progress = got.json()
        await rig.server.platform.recorder.flush()
        listed = await rig.client.get(
            "/v1/calls", params={"campaign_id": campaign_id}, headers=auth(READ)
        )
    assert progress["backend"] == "twilio"
    assert progress["attempts"] == {"completed": 1, "busy": 1, "no_answer": 1}
    calls = {c["to"]: c for c in listed.json()["calls"]}
    assert {to: c["status"] for to, c in calls.items()} == {
        "+15550161": "completed",
        "+15550162": "busy",
        "+15550163": "no_answer",
    }
    assert {c["backend"] for c in calls.values()} == {"twilio"}
    (ann,) = rig.handled
    assert ann.backend == "twilio" and ann.metadata["customer_data"] == {"name": "Ann"}
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "contacts.1.to"


async def test_a_twilio_only_app_served_places_calls_through_twilio(
    twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.script("+15550170", "answer")

    def configure(app: VoxtraApp, handled: list[CallSession]) -> None:
        @app.route("4000", name="hello")
        async def hello(call: CallSession) -> None:
            handled.append(call)
            await call.answer()
            await call.hangup()

    async with served(tmp_path, twilio, None, configure) as rig:
        # no backend named: Twilio, the only one this app has
        call_id = await rig.place(to="+15550170", route="hello")
        detail = await rig.wait_for(call_id, lambda d: d["status"] == "completed")
        asterisk = await rig.client.post(
            "/v1/calls",
            json={"to": "+15550170", "route": "hello", "backend": "asterisk"},
            headers=auth(WRITE),
        )
        ready = await rig.client.get("/readyz")
    assert detail["backend"] == "twilio" and detail["answered_at"] is not None
    assert [c.backend for c in rig.handled] == ["twilio"]
    assert asterisk.status_code == 422
    assert asterisk.json()["errors"][0]["field"] == "backend"
    assert ready.status_code == 200


async def test_a_schedule_over_twilio(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    twilio.script("+15550180", "answer")

    def configure(app: VoxtraApp, handled: list[CallSession]) -> None:
        @app.route("5000", name="remind")
        async def remind(call: CallSession) -> None:
            handled.append(call)
            await call.answer()
            await call.hangup()

    async with served(tmp_path, twilio, fake_asterisk, configure) as rig:
        now = datetime.now(UTC).isoformat()
        body = {"to": "+15550180", "route": "remind", "at": now, "backend": "twilio"}
        made = await rig.client.post("/v1/schedules", json=body, headers=auth(WRITE))
        assert made.status_code == 201, made.text
        refused = await rig.client.post(
            "/v1/schedules", json={**body, "to": "PJSIP/alice"}, headers=auth(WRITE)
        )
        schedule_id = made.json()["schedule_id"]
        async with asyncio.timeout(15):
            while True:
                got = await rig.client.get(f"/v1/schedules/{schedule_id}", headers=auth(READ))
                runs = got.json()["recent_runs"]
                if runs and runs[0]["outcome"] is not None:
                    break
                await asyncio.sleep(0.1)
        await rig.server.platform.recorder.flush()
        listed = await rig.client.get(
            "/v1/calls", params={"direction": "outbound"}, headers=auth(READ)
        )
    assert runs[0]["outcome"] == "completed"
    (placed,) = [c for c in listed.json()["calls"] if c["to"] == "+15550180"]
    assert placed["backend"] == "twilio" and placed["status"] == "completed"
    assert [c.backend for c in rig.handled] == ["twilio"]
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "to"


async def test_a_worker_without_twilio_leaves_twilio_campaigns_to_others(
    running: Callable[..., Any],
) -> None:
    rig = await running()  # Asterisk only: no Twilio settings
    platform = rig.platform
    worker = service.worker_of(platform)
    async with platform.db.session() as session:
        campaign = await admin.create_campaign(
            session,
            contacts=[admin.ContactSpec("+15550190", None, {})],
            now=worker.clock.now(),
            route="hello",
            backend="twilio",  # made by a worker that has Twilio
        )
    started = await worker.run_once()
    async with platform.db.session() as session:
        progress = await admin.campaign_progress(session, campaign.id)
    refused = await rig.client.post(
        "/v1/calls", json={"to": "+15550190", "backend": "twilio"}, headers=auth(WRITE)
    )
    assert started == 0
    assert progress["attempts"] == {} and progress["contacts"] == {"pending": 1}
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "backend"


async def test_an_idempotency_key_from_before_the_backend_field_still_finds_its_call(
    running: Callable[..., Any],
) -> None:
    rig = await running()
    body = {"to": "PJSIP/alice", "route": "hello"}
    headers = {**auth(WRITE), "Idempotency-Key": "order-7"}
    first = await rig.client.post("/v1/calls", json=body, headers=headers)
    assert first.status_code == 201, first.text
    # The digest the API stored before `backend` was a field: the body's dump without it.
    before = CallRequest.model_validate(body).model_dump(mode="json", by_alias=True)
    del before["backend"]
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    async with rig.platform.db.session() as session:
        row = await session.get(IdempotencyKey, ("writer", "order-7"))
        assert row is not None
        row.request_sha256 = digest
    again = await rig.client.post("/v1/calls", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["call_id"] == first.json()["call_id"]
