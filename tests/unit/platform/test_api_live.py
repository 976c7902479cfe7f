"""The platform served for real (uvicorn on a socket, ``PlatformServer``): a voice agent
call on FakeAsterisk with the scripted providers, followed live over server-sent
events; then its transcript, latency figures, DTMF and recording from the API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_helpers import READ, WRITE, auth, build_app

from voxtra.calls.session import CallSession
from voxtra.pipeline.io import MonotonicClock
from voxtra.platform.serve import PlatformServer
from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _sse(client: httpx.AsyncClient, call_id: str, events: list[dict[str, Any]]) -> None:
    """Read the call's event stream until the server ends it (the call ended)."""
    async with client.stream("GET", f"/v1/calls/{call_id}/events", headers=auth(READ)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}


async def test_a_voice_call_followed_live_then_read_back(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    clock = MonotonicClock()
    app = build_app(
        tmp_path,
        stt=ScriptedSTT(["what time is it"], clock, delay=0.01),
        llm=ScriptedLLM([Reply(["It is noon."])], clock, delay=0),
        tts=ScriptedTTS(clock, ms_per_char=10, first_byte=0),
        vad=EnergyVAD(),
    )
    answered: list[CallSession] = []

    @app.route("2000", name="agent")
    async def agent(call: CallSession) -> None:
        answered.append(call)
        await call.converse()

    app.use_transport(fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    await server.start()
    try:
        assert server.port != 0
        async with httpx.AsyncClient(base_url=server.url) as client:
            created = await client.post(
                "/v1/calls",
                json={"to": "PJSIP/alice", "route": "agent", "record": True},
                headers=auth(WRITE),
            )
            assert created.status_code == 201, created.text
            call_id = created.json()["call_id"]
            events: list[dict[str, Any]] = []
            follower = asyncio.create_task(_sse(client, call_id, events))
            await fake_asterisk.wait_until(lambda: bool(answered), timeout=10)
            far_end = fake_asterisk.call(answered[0].id)
            await far_end.press("78")  # two digits back to back: both recorded
            await far_end.wait_until(lambda c: bool(c.media_ends), timeout=10)
            far_end.send_audio(b"\x80\x00" * 4000)  # 1 s of loud tone: the caller speaks

            async def turns() -> list[dict[str, Any]]:
                await server.platform.recorder.flush()
                body = await client.get(f"/v1/calls/{call_id}/transcript", headers=auth(READ))
                assert body.status_code == 200, body.text
                return list(body.json()["turns"])

            # Polled at 10 a second: the API's rate limit is 20 a second per token (burst
            # 40), and polling every 20 ms ran into it (429) on a slow run.
            for _ in range(100):
                if len(await turns()) >= 2:
                    break
                await asyncio.sleep(0.1)
            await far_end.hang_up()
            await asyncio.wait_for(follower, 15)

            transcript = await turns()
            assert [(t["speaker"], t["text"]) for t in transcript] == [
                ("caller", "what time is it"),
                ("agent", "It is noon."),
            ]
            agent_turn = transcript[1]
            assert set(agent_turn["latency"]) >= {"stt_ms", "llm_ms", "tts_ms", "total_ms"}
            assert agent_turn["latency"]["total_ms"] is not None
            assert transcript[0]["start"] is not None and transcript[0]["start"] >= 0

            kinds = [e["event"] for e in events]
            statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
            assert statuses == ["queued", "dialing", "in_progress", "completed"]
            assert "transcript" in kinds and "dtmf" in kinds
            assert [e["data"]["digit"] for e in events if e["event"] == "dtmf"] == ["7", "8"]
            assert [e["id"] for e in events] == sorted(e["id"] for e in events)
            # resuming after the last id gives only what came since: at most the
            # recording's link, delivered after the call ended
            resumed: list[dict[str, Any]] = []
            await _sse_after(client, call_id, events[-1]["id"], resumed)
            assert all(e["id"] > events[-1]["id"] for e in resumed)
            assert {e["event"] for e in resumed} <= {"recording"}

            for _ in range(250):
                await server.platform.recorder.flush()
                detail = (await client.get(f"/v1/calls/{call_id}", headers=auth(READ))).json()
                if detail["recording"]:
                    break
                await asyncio.sleep(0.02)
            assert detail["status"] == "completed"
            assert detail["metrics"]["turns"] == 2
            assert detail["metrics"]["dtmf"] == 2
            assert detail["metrics"]["latency_ms"]["total_ms"]["p50"] is not None
            assert detail["recording"]["download_url"]
            meta = (await client.get(f"/v1/calls/{call_id}/recording", headers=auth(READ))).json()
            assert meta["name"] == detail["recording"]["name"]
            download = await client.get(
                f"/v1/calls/{call_id}/recording", params={"download": 1}, headers=auth(READ)
            )
            assert download.status_code == 200 and download.content[:4] == b"RIFF"
            metrics = (await client.get("/metrics")).text
            assert 'voxtra_turn_latency_seconds_count{stage="total"} 1.0' in metrics
    finally:
        await server.stop()


async def _sse_after(
    client: httpx.AsyncClient, call_id: str, last: int, events: list[dict[str, Any]]
) -> None:
    headers = {**auth(READ), "Last-Event-ID": str(last)}
    async with client.stream("GET", f"/v1/calls/{call_id}/events", headers=headers) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                events.append({"id": int(line[4:])})
            elif line.startswith("event: "):
                events[-1]["event"] = line[7:]


def _closing_the_store() -> list[asyncio.Task[Any]]:
    """Tasks of SQLAlchemy's graceful close of a connection it threw away."""
    return [
        task
        for task in asyncio.all_tasks()
        if "_terminate_graceful_close" in getattr(task.get_coro(), "__qualname__", "")
    ]


def _serving() -> list[asyncio.Task[Any]]:
    """uvicorn's tasks of the requests under way."""
    return [
        task
        for task in asyncio.all_tasks()
        if "run_asgi" in getattr(task.get_coro(), "__qualname__", "")
    ]


async def test_a_dropped_event_stream_closes_its_database_sessions(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # A client that goes away while its stream reads the store: Starlette's cancel of
    # the stream cancelled the read's rollback and close too, and SQLAlchemy's close of
    # the connection it then threw away stayed pending for ever ("Task was destroyed
    # but it is pending" at exit): 19 drops of 20 on the call's events, on SQLite.
    app = build_app(tmp_path)
    held: list[CallSession] = []

    @app.route("2000", name="agent")
    async def agent(call: CallSession) -> None:
        held.append(call)
        await call.answer()
        await call.wait_ended()

    app.use_transport(fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            made = await client.post(
                "/v1/calls", json={"to": "PJSIP/alice", "route": "agent"}, headers=auth(WRITE)
            )
            assert made.status_code == 201, made.text
            call_id = made.json()["call_id"]
            await fake_asterisk.wait_until(lambda: bool(held), timeout=10)
            signed = await client.post(
                "/ui/login", data={"token": READ}, headers={"Origin": server.url}
            )
            assert signed.status_code == 303, signed.text
            for path, headers in (
                (f"/v1/calls/{call_id}/events", auth(READ)),
                ("/ui/stream", {}),
            ):
                for _ in range(5):
                    # A connection of its own each, closed after the first event.
                    async with (
                        httpx.AsyncClient(base_url=server.url, cookies=client.cookies) as one,
                        one.stream("GET", path, headers=headers) as resp,
                    ):
                        assert resp.status_code == 200
                        async for line in resp.aiter_lines():
                            if line.startswith("event: "):
                                break
                async with asyncio.timeout(10):
                    while _serving():  # the server saw every drop and ended its streams
                        await asyncio.sleep(0.02)
                assert (path, _closing_the_store()) == (path, [])
            await fake_asterisk.call(held[0].id).hang_up()
    finally:
        await server.stop()
