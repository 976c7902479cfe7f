"""Voicemail: record the caller until they press #, stop talking or hang up; keep it on disk.

    python examples/voicemail.py     # with the sandbox or docker-compose running

then call extension 2000 and speak after the beep. Each message is delivered to
``./voicemail/<date>/<call id>/<name>.wav`` once the file is safe (see the logs).
"""

from __future__ import annotations

import logging

from voxtra import CallSession, VoxtraApp
from voxtra.recording import LocalFileSink, RecordingMetadata

log = logging.getLogger("voicemail")

# --8<-- [start:app]
app = VoxtraApp(recording_sink=LocalFileSink("voicemail"))


@app.on_recording_delivered
def stored(meta: RecordingMetadata) -> None:
    # Called once per recording, after the sink confirmed it (never before).
    log.info("message from %s: %.1f s at %s", meta.caller, meta.duration or 0, meta.location)


@app.route(extension="2000")
async def voicemail(call: CallSession) -> None:
    await call.answer()
    await call.play_and_wait("vm-intro")
    # Records until the caller presses #, 60 s have passed, 5 s of silence, or the
    # hang-up; the beep plays before recording starts.
    result = await call.record(finish_on_key="#", max_length=60, silence_timeout=5, beep=True)
    log.info("call %s: message %s ended by %s", call.id, result.name, result.reason)
    if result.reason != "hangup":
        await call.play_and_wait("vm-goodbye")
    # Either way the recording is fetched, spooled and delivered to the sink.


# --8<-- [end:app]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app.run()
