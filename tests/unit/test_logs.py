"""JSON log lines carry the call they are about, with no code passing the id along."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from voxtra import CallSession, VoxtraApp
from voxtra.logs import CALL_ID, JsonFormatter
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_a_record_is_one_json_object_with_the_call_and_the_exception() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info)
    token = CALL_ID.set("call-42")
    try:
        line = json.loads(formatter.format(record))
    finally:
        CALL_ID.reset(token)
    assert line["message"] == "failed x" and line["level"] == "ERROR"
    assert line["call_id"] == "call-42"
    assert "ValueError: boom" in str(line["exception"])
    assert "call_id" not in json.loads(formatter.format(record))  # outside the call


async def test_handler_and_helper_records_carry_their_call(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "u",
        "p",
        app_name="log-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
    )
    log = logging.getLogger("userapp")
    lines = Lines()
    log.addHandler(lines)
    log.setLevel(logging.INFO)

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        log.info("handling")

        async def helper() -> None:
            log.info("helping")

        await call.spawn(helper())

    try:
        async with fake_asterisk.serve(app):
            first = await fake_asterisk.incoming(extension="1000")
            second = await fake_asterisk.incoming(extension="1000")
            await first.wait_ended()
            await second.wait_ended()
        log.info("outside any call")
        await asyncio.sleep(0)
    finally:
        log.removeHandler(lines)
    by_call: dict[object, list[object]] = {}
    for line in lines.lines:
        by_call.setdefault(line.get("call_id"), []).append(line["message"])
    assert by_call == {
        first.id: ["handling", "helping"],
        second.id: ["handling", "helping"],
        None: ["outside any call"],
    }
