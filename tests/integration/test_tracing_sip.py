"""A real SIP call's span carries the SIP Call-ID Asterisk read from the INVITE."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.testing.sipcaller import SipCaller
from voxtra.tracing import instrument

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]


async def test_the_call_span_has_the_sip_call_id(
    make_app: Callable[..., Awaitable[VoxtraApp]], tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = await make_app(app_name=f"voxtra-trace-{uuid.uuid4().hex[:8]}")
    # instrument() hooks in before calls arrive; the app is started, which is fine for
    # hooks (they are read per call)
    instrument(app, tracer_provider=provider)
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.hangup()
        done.set()

    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(record=False)
        await app.originate(f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", handler=handler)
        await asyncio.wait_for(done.wait(), 10)
        for _ in range(100):
            if exporter.get_finished_spans():
                break
            await asyncio.sleep(0.05)
    [span] = [s for s in exporter.get_finished_spans() if s.name == "voxtra.call"]
    assert span.attributes is not None
    assert str(span.attributes["asterisk.channel.name"]).startswith("PJSIP/sipcaller-")
    call_id = str(span.attributes["sip.call_id"])
    assert len(call_id) >= 8 and " " not in call_id  # Asterisk's Call-ID of the INVITE
