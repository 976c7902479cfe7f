"""A sink confirms only bytes the storage itself measured, never our metadata echoed back.

The stores here keep what they received with one byte flipped (corruption on the way)
and echo the metadata we sent, sha256 included, as S3 and GCS do. The hashes they
report (ETag, md5Hash) are computed from the bytes they hold, as the real ones do.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from voxtra.recording import DeliveryError, GCSSink, RecordingMetadata, S3Sink

from .conftest import MakeWav


def _flip(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]


class CorruptingS3:
    def __init__(self, corrupt: bool) -> None:
        self.corrupt = corrupt
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.sent_md5: list[str] = []

    async def put_object(self, *, Key: str, Body: bytes, **kw: Any) -> dict[str, Any]:
        self.sent_md5.append(kw["ContentMD5"])
        self.objects[Key] = (_flip(Body) if self.corrupt else Body, kw.get("Metadata", {}))
        return {}

    async def head_object(self, *, Key: str, **_: Any) -> dict[str, Any]:
        body, metadata = self.objects[Key]
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        return {"ContentLength": len(body), "ETag": f'"{etag}"', "Metadata": metadata}


class CorruptingGCS:
    def __init__(self, corrupt: bool) -> None:
        self.corrupt = corrupt
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}

    async def upload(self, bucket: str, key: str, handle: Any, **kw: Any) -> dict[str, Any]:
        body = handle.read()
        self.objects[key] = (_flip(body) if self.corrupt else body, kw["metadata"]["metadata"])
        return {}

    async def download_metadata(self, bucket: str, key: str, **_: Any) -> dict[str, Any]:
        body, metadata = self.objects[key]
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        return {"size": str(len(body)), "md5Hash": md5, "metadata": metadata}

    async def close(self) -> None:
        pass


def _measured(path: Path) -> RecordingMetadata:
    return RecordingMetadata(name="rec-1", call_id="call-1").measured(path)


@pytest.mark.parametrize("corrupt", [False, True])
async def test_s3_verifies_the_bytes_the_server_holds(make_wav: MakeWav, corrupt: bool) -> None:
    path = make_wav()
    sink = S3Sink("bucket", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b")
    fake = CorruptingS3(corrupt)
    sink._client = fake
    meta = _measured(path)
    if corrupt:
        with pytest.raises(DeliveryError, match="failed verification"):
            await sink.deliver(path, meta)
    else:
        assert (await sink.deliver(path, meta)).startswith("s3://bucket/")
    # The server also gets the MD5 to check the body against on arrival.
    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).digest()
    assert fake.sent_md5 == [base64.b64encode(digest).decode()]


@pytest.mark.parametrize("corrupt", [False, True])
async def test_gcs_verifies_the_bytes_the_server_holds(make_wav: MakeWav, corrupt: bool) -> None:
    path = make_wav()
    sink = GCSSink("bucket", emulator_host="http://127.0.0.1:9")
    sink._storage = CorruptingGCS(corrupt)
    meta = _measured(path)
    if corrupt:
        with pytest.raises(DeliveryError, match="failed verification"):
            await sink.deliver(path, meta)
    else:
        assert (await sink.deliver(path, meta)).startswith("gs://bucket/")
