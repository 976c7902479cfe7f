"""A GCS upload the service refuses, through the real gcloud-aio-storage client.

Above 5 MB the client uploads resumably: it asks for a session, then PUTs the bytes to
the session URI the service gave, whose ``upload_id`` lets anyone holding it write to
the bucket. fake-gcs-server cannot be made to refuse that PUT, so a small server here
speaks the two steps of Google's resumable upload protocol and answers the PUT 503.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path

import gcloud.aio.storage.storage as gcs_client
import pytest
from aiohttp import web

from voxtra.recording import DeliveryError, GCSSink, RecordingMetadata

UPLOAD_ID = "ADPycdu-secret-session-3f9a"


@pytest.fixture
async def refusing_gcs() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def initiate(request: web.Request) -> web.Response:
        seen.append(f"POST {request.query.get('uploadType')}")
        session = request.url.with_query(uploadType="resumable", upload_id=UPLOAD_ID)
        return web.Response(headers={"Location": str(session)})

    async def upload(request: web.Request) -> web.Response:
        await request.read()
        seen.append(f"PUT {request.query.get('upload_id')}")
        return web.Response(status=503, text="backend unavailable")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/upload/storage/v1/b/{bucket}/o", initiate)
    app.router.add_put("/upload/storage/v1/b/{bucket}/o", upload)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def _big_wav(path: Path, size: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(range(256)) * (size // 256))
    return path


async def test_a_refused_resumable_upload_keeps_its_session_uri_out_of_the_error(
    refusing_gcs: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = refusing_gcs

    async def no_wait(_: float) -> None:  # the client's own back-off (1+2+4+8 s)
        return None

    monkeypatch.setattr(gcs_client, "sleep", no_wait)
    path = _big_wav(tmp_path / "big.wav", 6 * 1024 * 1024)  # above the 5 MB limit
    meta = RecordingMetadata.for_file(path, name="g-refused", call_id="c")
    async with GCSSink("calls", emulator_host=url) as sink:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(path, meta)
    assert seen[0] == "POST resumable" and seen[1:] == [f"PUT {UPLOAD_ID}"] * 5
    error = caught.value
    assert "HTTP 503" in str(error) and "/upload/storage/v1/b/calls/o" in str(error)
    # Nowhere in what is logged, kept in the spool entry or given to on_failed.
    chain = [error, error.__cause__, error.__context__]
    assert not [e for e in chain if e is not None and UPLOAD_ID in str(e)], chain
