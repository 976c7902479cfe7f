from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from voxtra.recording import DeliveryError, GCSSink, RecordingMetadata
from voxtra.testing.storage import FakeGcsServer

pytestmark = pytest.mark.storage

MiB = 1024 * 1024


async def _download(server: FakeGcsServer, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    from gcloud.aio.storage import Storage

    storage = Storage(api_root=server.url)
    try:
        data: bytes = await storage.download(bucket, key)
        meta = await storage.download_metadata(bucket, key)
    finally:
        await storage.close()
    return data, meta


async def test_gcs_small_upload(
    fake_gcs: FakeGcsServer, gcs_bucket: str, make_wav: Callable[..., Path]
) -> None:
    path = make_wav(seconds=1.0)
    meta = RecordingMetadata.for_file(path, name="g-1", call_id="1700.2", called_number="200")
    async with GCSSink(gcs_bucket, prefix="calls", emulator_host=fake_gcs.url) as sink:
        location = await sink.deliver(path, meta)
    key = sink.key_for(meta)
    assert key.startswith("calls/") and key.endswith("/1700.2/g-1.wav")
    assert location == f"gs://{gcs_bucket}/{key}"
    data, stored = await _download(fake_gcs, gcs_bucket, key)
    assert hashlib.sha256(data).hexdigest() == meta.sha256
    assert stored["contentType"] == "audio/wav"
    assert stored["metadata"]["called-number"] == "200"


async def test_gcs_large_upload_is_resumable_and_identical(
    fake_gcs: FakeGcsServer,
    gcs_bucket: str,
    make_big_wav: Callable[[int], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The emulator found through STORAGE_EMULATOR_HOST, as GCS client libraries do.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url.removeprefix("http://"))
    path = make_big_wav(7 * MiB)  # above gcloud-aio's 5 MB simple-upload limit
    meta = RecordingMetadata.for_file(path, name="g-big", call_id="c")
    async with GCSSink(gcs_bucket) as sink:
        assert sink.emulator_host == fake_gcs.url
        location = await sink.deliver(path, meta)
    data, stored = await _download(fake_gcs, gcs_bucket, sink.key_for(meta))
    assert location.startswith(f"gs://{gcs_bucket}/")
    assert int(stored["size"]) == 7 * MiB
    assert hashlib.sha256(data).hexdigest() == meta.sha256


async def test_gcs_missing_bucket_is_a_delivery_error(
    fake_gcs: FakeGcsServer, make_wav: Callable[..., Path]
) -> None:
    path = make_wav()
    meta = RecordingMetadata.for_file(path, name="g-2", call_id="c")
    async with GCSSink("no-such-bucket", emulator_host=fake_gcs.url) as sink:
        with pytest.raises(DeliveryError, match="gcs: upload of gs://no-such-bucket/"):
            await sink.deliver(path, meta)


async def test_gcs_upload_that_times_out_says_so(
    fake_gcs: FakeGcsServer, gcs_bucket: str, make_wav: Callable[..., Path]
) -> None:
    # A store that stops answering mid-upload: the bare TimeoutError has no text, and the
    # error (logged, kept in the spool entry, given to on_failed) ended in "failed: ".
    path = make_wav()
    meta = RecordingMetadata.for_file(path, name="g-stall", call_id="c")
    async with GCSSink(gcs_bucket, emulator_host=fake_gcs.url, timeout=1) as sink:
        await sink.open()
        assert fake_gcs.pid is not None
        os.kill(fake_gcs.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(path, meta)
        finally:
            os.kill(fake_gcs.pid, signal.SIGCONT)
    assert str(caught.value).endswith(
        f"upload of gs://{gcs_bucket}/{sink.key_for(meta)} failed: no answer within the "
        "timeout of 1 s (TimeoutError)"
    )
