"""S3 (and S3-compatible: MinIO, SeaweedFS, R2 ...) recording sink on aiobotocore.

aiobotocore is botocore on aiohttp, so uploads share the event loop with calls in
progress instead of blocking a thread. Large recordings go up as multipart uploads
(aborted on failure so no orphaned parts accrue charges), and every upload is
checked afterwards with a HEAD: the stored size and the SHA-256 kept in the
object's metadata must match before the recording counts as delivered.

The client is made by :meth:`S3Sink.open`, which the delivery calls when the sink is
added (app start, ``add_sink``), not by the first upload: making it imports botocore
and parses its JSON service model on the event loop: the first upload stalled the loop
109-141 ms (3 runs, :class:`voxtra.testing.faults.StallMeter`), which every live
call's audio would feel; after ``open()`` it stalled 1-3 ms. A worker thread does not
help: the parse holds the GIL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from voxtra.config import secret_value
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

__all__ = ["MIN_PART_SIZE", "S3Sink"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3 rejects multipart parts smaller than this (except the last one).
MIN_PART_SIZE = 5 * MiB


class S3Sink:
    """Uploads recordings to an S3 bucket; ``deliver`` returns ``s3://bucket/key``.

    Credentials default to botocore's usual chain (environment, config files,
    instance roles) when ``access_key``/``secret_key`` are not given. The bucket
    must exist. Call :meth:`aclose` (or use ``async with``) to release the client.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | SecretStr | None = None,
        key_template: str = DEFAULT_KEY_TEMPLATE,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        name: str = "s3",
        client_config: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("S3Sink needs a bucket name")
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
        if multipart_threshold < 1:
            raise ConfigError("S3 multipart_threshold must be positive")
        if (access_key is None) != (secret_key is None):
            raise ConfigError("S3Sink needs both access_key and secret_key, or neither")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.key_template = validate_key_template(key_template)
        render_key(self.key_template, _PROBE_META, prefix)  # rejects a bad prefix now
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._name = name
        self._access_key = access_key
        self._secret_key = None if secret_key is None else SecretStr(secret_value(secret_key))
        self._client_config = client_config
        self._client: Any = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    def key_for(self, meta: RecordingMetadata) -> str:
        return render_key(self.key_template, meta, self.prefix)

    async def _get_client(self) -> Any:
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                # Few, quick client-side retries: RecordingDelivery owns the real
                # retry policy, and the spool makes giving up here safe.
                config = self._client_config or AioConfig(
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                )
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        aws_access_key_id=self._access_key,
                        aws_secret_access_key=(
                            None
                            if self._secret_key is None
                            else self._secret_key.get_secret_value()
                        ),
                        config=config,
                    )
                )
                self._exit_stack = stack
            return self._client

    async def link(self, location: str, *, expires: int = 900) -> str | None:
        """A presigned GET URL for ``location`` (an ``s3://`` URI this sink stored, in
        its bucket), valid ``expires`` seconds; None for any other location. Signing is
        local: no request is made."""
        parts = urlsplit(location)
        if parts.scheme != "s3" or parts.netloc != self.bucket or not parts.path[1:]:
            return None
        client = await self._get_client()
        url = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": parts.path[1:]},
            ExpiresIn=expires,
        )
        return str(url)

    async def open(self) -> None:
        """Make the client now (before calls), so the first upload does not stall the loop."""
        await self._get_client()

    async def aclose(self) -> None:
        async with self._lock:
            if self._exit_stack is not None:
                await self._exit_stack.aclose()
            self._exit_stack = None
            self._client = None

    async def __aenter__(self) -> S3Sink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
            BotoCoreError,
            ClientError,
        )

        meta = await ensure_measured(path, meta)
        assert meta.size_bytes is not None and meta.sha256 is not None
        key = self.key_for(meta)
        extra = {
            "ContentType": validate_format(meta.format).content_type,
            "Metadata": meta.object_metadata(),
        }
        # The check must be on bytes the *server* measured: the sha256 in the object's
        # metadata is only our own value echoed back. Each body goes with its
        # Content-MD5 (the server refuses bytes that do not match it), and the ETag the
        # server computed is compared with the MD5 of what we sent (single PUT) or of
        # the parts (multipart, ``md5(part digests)-N``).
        expected_etag: str | None
        multipart = meta.size_bytes > self.multipart_threshold
        try:
            client = await self._get_client()
            if multipart:
                expected_etag = await self._multipart(client, Path(path), key, extra)
            else:
                body = await asyncio.to_thread(Path(path).read_bytes)
                digest = _md5(body)
                await client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentMD5=base64.b64encode(digest).decode("ascii"),
                    **extra,
                )
                expected_etag = digest.hex()
            head = await client.head_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DeliveryError(
                self.name, f"upload of s3://{self.bucket}/{key} failed: {exc}"
            ) from exc
        stored_size = head.get("ContentLength")
        stored_etag = str(head.get("ETag", "")).strip('"')
        # With SSE-KMS/SSE-C the ETag is not an MD5 of the data; Content-MD5 still held.
        etag_is_md5 = head.get("ServerSideEncryption") != "aws:kms" and not head.get(
            "SSECustomerAlgorithm"
        )
        if stored_size != meta.size_bytes or (etag_is_md5 and stored_etag != expected_etag):
            raise DeliveryError(
                self.name,
                f"s3://{self.bucket}/{key} failed verification: stored {stored_size} bytes "
                f"ETag {stored_etag}, sent {meta.size_bytes} bytes MD5 {expected_etag}",
            )
        logger.debug("stored s3://%s/%s (%d bytes)", self.bucket, key, meta.size_bytes)
        if multipart:
            await self._abort_leftovers(client, key)
        return f"s3://{self.bucket}/{key}"

    async def _abort_leftovers(self, client: Any, key: str) -> None:
        """Abort the unfinished multipart uploads of ``key``: earlier attempts whose own
        abort failed (the store went down mid-upload, so the abort found it down too:
        measured on SeaweedFS, the upload stayed listed after the retry delivered the
        recording) or that a crash cut short. Their parts are billed and never expire
        without a lifecycle rule. Each recording has a key of its own, so any upload of
        it that is still open is a leftover. Best effort: the recording is delivered,
        and a policy without ``s3:ListBucketMultipartUploads`` must not undo that.
        """
        from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
            BotoCoreError,
            ClientError,
        )

        try:
            listing = await client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                if upload.get("Key") == key:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )
                    logger.info("aborted a multipart upload of %s an earlier attempt left", key)
        except (BotoCoreError, ClientError, KeyError) as exc:
            logger.warning(
                "s3://%s/%s is stored, but unfinished multipart uploads of it could not "
                "be listed or aborted (an AbortIncompleteMultipartUpload lifecycle rule "
                "removes them): %s",
                self.bucket,
                key,
                exc,
            )

    async def _multipart(self, client: Any, path: Path, key: str, extra: dict[str, Any]) -> str:
        """Upload in parts; returns the ETag S3 computes for them (``md5(digests)-N``)."""
        created = await client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
        upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []
        digests: list[bytes] = []
        try:
            with path.open("rb") as handle:
                number = 1
                while chunk := await asyncio.to_thread(_read, handle, self.part_size):
                    digest = await asyncio.to_thread(_md5, chunk)
                    digests.append(digest)
                    part = await client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=base64.b64encode(digest).decode("ascii"),
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return f"{_md5(b''.join(digests)).hex()}-{len(digests)}"
        except BaseException:
            # Also on cancellation: orphaned parts cost money and never expire by default.
            try:
                await asyncio.shield(
                    client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                )
            except Exception as exc:  # the original error matters more
                logger.warning("aborting multipart upload %s of %s failed: %s", upload_id, key, exc)
            raise


def _read(handle: IO[bytes], size: int) -> bytes:
    return handle.read(size)


def _md5(data: bytes) -> bytes:
    # An integrity check S3 itself performs (Content-MD5, ETag), not a security one.
    return hashlib.md5(data, usedforsecurity=False).digest()


_PROBE_META = RecordingMetadata(name="probe", call_id="probe")
