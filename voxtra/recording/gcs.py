"""Google Cloud Storage recording sink on gcloud-aio-storage.

Why gcloud-aio-storage rather than google-cloud-storage: Google's official client
is synchronous (requests), so every upload would need a worker thread next to the
event loop that carries live call audio; gcloud-aio-storage speaks the same GCS
JSON API natively on aiohttp, which Voxtra already uses for ARI. It switches to
resumable uploads for large files by itself, and talks to an emulator such as
fake-gcs-server when given its URL (or ``STORAGE_EMULATOR_HOST``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voxtra.errors import ConfigError
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import validate_format
from voxtra.recording.sinks import (
    DEFAULT_KEY_TEMPLATE,
    DeliveryError,
    ensure_measured,
    render_key,
    validate_key_template,
)

__all__ = ["GCSSink"]

logger = logging.getLogger(__name__)


class GCSSink:
    """Uploads recordings to a GCS bucket; ``deliver`` returns ``gs://bucket/key``.

    Credentials: ``service_file`` (a service-account JSON path), else the
    application-default chain of gcloud-aio-auth. With an emulator no credentials
    are sent. Every upload is verified by reading back the object's size and the
    SHA-256 stored in its metadata. Call :meth:`aclose` to release the HTTP session.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        emulator_host: str | None = None,
        service_file: str | None = None,
        key_template: str = DEFAULT_KEY_TEMPLATE,
        timeout: int = 120,
        name: str = "gcs",
    ) -> None:
        if not bucket:
            raise ConfigError("GCSSink needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix
        host = emulator_host or os.environ.get("STORAGE_EMULATOR_HOST") or None
        if host and not host.startswith(("http://", "https://")):
            host = f"http://{host}"
        self.emulator_host = host
        self.key_template = validate_key_template(key_template)
        render_key(self.key_template, RecordingMetadata(name="probe", call_id="probe"), prefix)
        self.timeout = timeout
        self._service_file = service_file
        self._name = name
        self._storage: Any = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    def key_for(self, meta: RecordingMetadata) -> str:
        return render_key(self.key_template, meta, self.prefix)

    async def _get_storage(self) -> Any:
        async with self._lock:
            if self._storage is None:
                from gcloud.aio.storage import Storage

                self._storage = Storage(
                    api_root=self.emulator_host, service_file=self._service_file
                )
            return self._storage

    async def read(self, location: str) -> bytes | None:
        """The stored object at ``location`` (a ``gs://`` URI in this sink's bucket), or
        None for any other location. (A signed URL would need the service account's
        private key; reading through the sink works with any credentials it has.)"""
        parts = urlsplit(location)
        if parts.scheme != "gs" or parts.netloc != self.bucket or not parts.path[1:]:
            return None
        storage = await self._get_storage()
        data = await storage.download(self.bucket, parts.path[1:], timeout=self.timeout)
        return bytes(data)

    async def open(self) -> None:
        """Make the client now (the delivery calls it when the sink is added, before
        calls): importing gcloud-aio-storage at the first upload stalled the event loop
        27-31 ms (3 runs, :class:`voxtra.testing.faults.StallMeter`)."""
        await self._get_storage()

    async def aclose(self) -> None:
        async with self._lock:
            if self._storage is not None:
                await self._storage.close()
            self._storage = None

    async def __aenter__(self) -> GCSSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        import aiohttp

        meta = await ensure_measured(path, meta)
        key = self.key_for(meta)
        where = f"gs://{self.bucket}/{key}"
        refused: str | None = None
        try:
            storage = await self._get_storage()
            handle = await asyncio.to_thread(Path(path).open, "rb")
            try:
                await storage.upload(
                    self.bucket,
                    key,
                    handle,
                    content_type=validate_format(meta.format).content_type,
                    metadata={"metadata": meta.object_metadata()},
                    timeout=self.timeout,
                )
            finally:
                handle.close()
            stored = await storage.download_metadata(self.bucket, key, timeout=self.timeout)
        except aiohttp.ClientResponseError as exc:
            refused = _response_error(exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(
                self.name, f"upload of {where} failed: {self._describe(exc)}"
            ) from exc
        if refused is not None:
            # Raised outside the except, so the original is neither cause nor context:
            # its text has the request's URL, which for a resumable upload (above 5 MB)
            # is the session URI with its upload_id, a credential (anyone holding it
            # may upload to the bucket while the session lasts, up to a week).
            raise DeliveryError(self.name, f"upload of {where} failed: {refused}")
        # Verify with what the *server* measured (md5Hash of the stored bytes); the
        # sha256 in the object's metadata is only our own value echoed back.
        stored_size = int(stored.get("size", -1))
        stored_md5 = stored.get("md5Hash")
        sent_md5 = base64.b64encode(await asyncio.to_thread(_md5_file, Path(path))).decode()
        # Composite objects carry no md5Hash; then only the size can be compared.
        if stored_size != meta.size_bytes or (stored_md5 is not None and stored_md5 != sent_md5):
            raise DeliveryError(
                self.name,
                f"{where} failed verification: stored {stored_size} bytes md5 {stored_md5}, "
                f"sent {meta.size_bytes} bytes md5 {sent_md5}",
            )
        logger.debug("stored %s (%d bytes)", where, stored_size)
        return where

    def _describe(self, error: BaseException) -> str:
        """What went wrong, never nothing: a timed-out request raises a bare TimeoutError,
        whose text is empty (measured: fake-gcs-server stopped mid-upload gave "upload of
        gs://... failed: " in the log, the spool entry and ``on_failed``)."""
        if isinstance(error, TimeoutError) and not str(error):
            return f"no answer within the timeout of {self.timeout} s (TimeoutError)"
        return str(error) or type(error).__name__


def _response_error(error: Any) -> str:
    """An HTTP error answer (``aiohttp.ClientResponseError``) without its URL's query:
    aiohttp's own text ends in the whole URL (measured: "503, message='Service
    Unavailable', url='https://storage.googleapis.com/upload/storage/v1/b/<bucket>/o?
    uploadType=resumable&upload_id=...'")."""
    url = error.request_info.real_url
    return (
        f"HTTP {error.status} {error.message} ({error.request_info.method} {url.with_query(None)})"
    )


def _md5_file(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)  # GCS's own integrity check, not security
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.digest()
