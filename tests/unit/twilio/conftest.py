"""The local Twilio fixture of the Twilio backend's tests (helpers: twilio_rig.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voxtra.testing.fakes.twilio import FakeTwilio


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake
