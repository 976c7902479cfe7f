"""Log records as JSON lines, each carrying the call it is about.

Every call runs in a task of its own, and asyncio tasks copy the context they are
created in: the app sets :data:`CALL_ID` when a call's task starts, so every record
logged by that call's handler, helpers, pipeline and teardown carries ``call_id``
without any code passing it along. :class:`JsonFormatter` writes one JSON object per
record (``ts``, ``level``, ``logger``, ``message``, ``call_id`` when there is one, the
exception text when there is one), the shape log shippers (Loki, CloudWatch, ELK)
index without parsing.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["CALL_ID", "JsonFormatter", "use_json_logs"]

CALL_ID: ContextVar[str | None] = ContextVar("voxtra_call_id", default=None)
"""The id of the call the running code serves (None outside a call)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``call_id`` from :data:`CALL_ID` (or ``extra=``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or CALL_ID.get()
        if call_id:
            out["call_id"] = call_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def use_json_logs(level: str | int = "INFO") -> logging.Handler:
    """Send the root logger's records to stderr as JSON lines (replacing its handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
