"""A calling campaign: renewal reminders to a contact list, under limits and windows.

Served for real (the route ``renewal`` runs each answered call)::

    export VOXTRA_PLATFORM__TOKENS='[{"name": "crm", "token": "change-me-0123456789",
                                      "scopes": ["calls:read", "calls:write"]}]'
    export VOXTRA_PLATFORM__NUMBER_TEMPLATE='PJSIP/{number}@my-trunk'
    export VOXTRA_PLATFORM__WEBHOOK_URL='https://crm.example/hooks/voxtra'
    export VOXTRA_PLATFORM__WEBHOOK_SECRET='a-long-random-secret'
    voxtra serve examples/campaign.py:app

    curl -X POST http://127.0.0.1:8000/v1/campaigns \\
      -H "Authorization: Bearer change-me-0123456789" \\
      -F contacts=@contacts.csv \\
      -F 'campaign={"route": "renewal", "tz": "Europe/Berlin", "max_concurrent": 20,
           "calls_per_minute": 300,
           "windows": [{"days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "18:00"}],
           "retry": {"max_attempts": 3, "busy": {"delay": 300}, "no_answer": {"delay": 900}}}'

with ``contacts.csv`` like::

    to,tz,name,plan
    +4930123456,Europe/Berlin,Ada,gold
    +14155550100,America/Los_Angeles,Grace,basic

Run without Asterisk (``python examples/campaign.py``), it serves the same app on an
in-process FakeAsterisk whose numbers answer, are busy or do not answer, with a SQLite
store and a clock running 60 times faster, posts a campaign over the HTTP API and prints
its progress until it has finished (a few seconds).
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from typing import Any

from voxtra import CallSession, VoxtraApp

app = VoxtraApp()


@app.route("renewal", name="renewal")  # dialled by the campaign; no inbound call has it
async def renewal(call: CallSession) -> None:
    """Each answered contact: their own variables are ``customer_data``."""
    data = call.metadata.get("customer_data", {})
    await call.answer()
    await call.play_and_wait("hello-world")
    # A real agent would talk here (VoiceConfig, call.say / call.listen) about data["plan"].
    await call.set_variable("VOXTRA_RENEWAL_PLAN", str(data.get("plan", "")))
    await call.hangup()


CONTACTS_CSV = """to,tz,name,plan
+4930100001,Europe/Berlin,Ada,gold
+4930100002,Europe/Berlin,Alan,basic
+4930100003,Europe/Berlin,Grace,gold
+4930100004,Europe/Berlin,Edsger,basic
+4930100005,Europe/Berlin,Barbara,gold
+4930100006,Europe/Berlin,Donald,basic
"""


async def demo() -> dict[str, Any]:
    """The campaign on FakeAsterisk and SQLite; returns its final progress."""
    import httpx

    from voxtra.platform.api import create_api
    from voxtra.platform.engine import ScaledClock, service
    from voxtra.platform.store.db import Database
    from voxtra.testing import FakeAsterisk

    token = "demo-token-0123456789abcdef"
    with tempfile.TemporaryDirectory() as tmp:
        demo_app = VoxtraApp(
            "http://asterisk.invalid:8088",
            "user",
            "secret",
            app_name="campaign-demo",
            spool_dir=f"{tmp}/spool",
            recordings_dir=f"{tmp}/recordings",
            platform={
                "tokens": [{"name": "demo", "token": token, "scopes": ["admin"]}],
                "number_template": "PJSIP/{number}@trunk",
            },
        )
        demo_app.add_route(app.router.routes[0])  # the same renewal route
        fake = FakeAsterisk()
        fake.endpoint_outcomes = {
            "PJSIP/+4930100002@trunk": "busy",
            "PJSIP/+4930100004@trunk": "noanswer",
        }
        db = Database(f"sqlite:///{tmp}/platform.db")
        api = create_api(demo_app, db)
        platform = api.state.platform
        worker = service.worker_of(platform)
        # Monday 09:00 UTC (10:00 in Berlin: inside the window), 60x faster
        worker.clock = ScaledClock(60, start=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
        worker.poll_interval = 2.0
        await platform.start()
        auth = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                fake.serve(demo_app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=api), base_url="http://demo"
                ) as client,
            ):
                settings = (
                    '{"route": "renewal", "max_concurrent": 2, "calls_per_minute": 30,'
                    ' "windows": [{"days": ["mon","tue","wed","thu","fri"],'
                    ' "start": "09:00", "end": "18:00"}],'
                    ' "retry": {"max_attempts": 2, "busy": {"delay": 60}, "no_answer": null}}'
                )
                made = await client.post(
                    "/v1/campaigns",
                    files={"contacts": ("contacts.csv", CONTACTS_CSV.encode(), "text/csv")},
                    data={"campaign": settings},
                    headers=auth,
                )
                made.raise_for_status()
                campaign_id = made.json()["campaign_id"]
                while True:
                    progress = (
                        await client.get(f"/v1/campaigns/{campaign_id}", headers=auth)
                    ).json()
                    print(progress["status"], progress["contacts"])
                    if progress["status"] == "finished":
                        return dict(progress)
                    await asyncio.sleep(0.25)
        finally:
            await platform.stop()
            await db.close()
            await fake.aclose()


if __name__ == "__main__":
    asyncio.run(demo())
