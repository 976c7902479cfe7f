"""Voicemail: record what the caller says until they press # or hang up; keep it on disk.

    python examples/voicemail.py     # with the sandbox or docker-compose running

then call extension 2000 and speak after the beep. Each message is delivered to
``./voicemail/<date>/<call id>/<name>.wav`` once the file is safe (see the logs).
"""

from __future__ import annotations

import contextlib
import logging

from voxtra import CallEnded, CallSession, VoxtraApp
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
    # The beep plays before recording starts; Asterisk also stops after 60 s, or 5 s
    # of silence.
    await call.record_start(beep=True, max_duration=60, max_silence=5)
    with contextlib.suppress(CallEnded):  # a caller who hangs up is the usual end
        await call.gather(max_digits=20, terminator="#", first_digit_timeout=60)
        await call.record_stop()  # returns once the file is in the spool
        await call.play_and_wait("vm-goodbye")
    # After a hang-up the call's teardown stops, fetches and delivers the recording.


# --8<-- [end:app]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app.run()
