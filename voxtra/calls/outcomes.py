"""What an outbound call's end says: busy, no answer, or why it failed.

Shared by ``VoxtraApp.originate`` and a call's own legs (``call.dial``): one mapping
from Asterisk's hangup cause (Q.850) and Dial status to an outcome, with a hint of
what to check where Voxtra can tell.
"""

from __future__ import annotations

from voxtra.errors import CallBusy, CallFailed, CallNoAnswer, OriginateError

__all__ = ["BUSY_CAUSES", "DIALSTATUS_CAUSES", "NO_ANSWER_CAUSES", "originate_error"]

# Asterisk hangup causes (Q.850) reported as a specific outcome.
BUSY_CAUSES = {17}
NO_ANSWER_CAUSES = {18, 19}
DIALSTATUS_CAUSES = {
    "BUSY": (17, "User busy"),
    "NOANSWER": (19, "No user responding"),
    "CONGESTION": (34, "Circuit/channel congestion"),
    "CHANUNAVAIL": (20, "Subscriber absent"),
}


def originate_error(
    endpoint: str, cause: int | None, cause_txt: str, dialstatus: str | None
) -> OriginateError:
    """The outcome of an outbound call that did not answer, as its error: from the
    hangup cause and, where the cause says nothing (a Local channel), Dial's status."""
    status = (dialstatus or "").upper()
    if not cause and status in DIALSTATUS_CAUSES:
        # A Local channel's own hangup cause is often 0; Dial's status still says why.
        cause, cause_txt = DIALSTATUS_CAUSES[status]
    if cause in BUSY_CAUSES or status == "BUSY":
        return CallBusy(endpoint, cause, cause_txt, "busy")
    if cause in NO_ANSWER_CAUSES or status in ("NOANSWER", "CANCEL"):
        return CallNoAnswer(endpoint, cause, cause_txt, "no answer")
    what = "congestion" if status == "CONGESTION" or cause == 34 else "call failed"
    technology, _, target = endpoint.partition("/")
    if not cause and not status and technology.lower() == "local":
        # Measured on Asterisk 22: Local/<exten>@<context> whose extension (or context)
        # does not exist ends with cause 0 "Unknown" and no Dial (the log says "No such
        # extension/context"); an existing one that hangs up says 16 or a Dial status.
        exten, _, context = target.partition("@")
        context = context.split("/", 1)[0] or "default"
        return CallFailed(
            endpoint,
            cause,
            cause_txt,
            f"the Local channel ended before answering, without a hangup cause: most "
            f"likely there is no extension {exten!r} in context {context!r}",
            f"check it with `dialplan show {exten}@{context}` in the Asterisk CLI (its "
            "log then says 'No such extension/context ... while calling Local channel')",
        )
    return CallFailed(endpoint, cause, cause_txt, what)
