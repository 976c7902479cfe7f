"""A Voxtra app served with the call platform's HTTP API.

    export VOXTRA_PLATFORM__TOKENS='[{"name": "crm", "token": "change-me-0123456789",
                                      "scopes": ["calls:read", "calls:write"]}]'
    export VOXTRA_PLATFORM__NUMBER_TEMPLATE='PJSIP/{number}@my-trunk'
    voxtra serve examples/platform_app.py:app

Then place a call (the route ``reminder`` runs it) and follow it::

    curl -X POST http://127.0.0.1:8000/v1/calls \\
      -H "Authorization: Bearer change-me-0123456789" -H "Content-Type: application/json" \\
      -d '{"to": "+4930123456", "route": "reminder", "variables": {"name": "Ada"}}'

The handlers are ordinary Voxtra handlers: the API's ``variables`` arrive as
``call.metadata["customer_data"]``. Inbound calls to extension 100 are stored too and
listed by ``GET /v1/calls?direction=inbound``. See docs/platform.md.
"""

from __future__ import annotations

from voxtra import CallSession, VoxtraApp

app = VoxtraApp()


@app.route("reminder", name="reminder")  # dialled by the API; no inbound call has it
async def reminder(call: CallSession) -> None:
    """An outbound reminder: read the customer's name from the API's variables."""
    name = call.metadata.get("customer_data", {}).get("name", "there")
    await call.answer()
    await call.play_and_wait("hello-world")
    await call.set_variable("VOXTRA_REMINDED", name)
    await call.hangup()


@app.route("100", name="front-desk")
async def front_desk(call: CallSession) -> None:
    """An inbound call: answered, greeted, hung up (and recorded in the store)."""
    await call.answer()
    await call.play_and_wait("hello-world")
    await call.hangup()
