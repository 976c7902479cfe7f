"""start() prepares a long-lived server the way run() does."""

from __future__ import annotations

import gc
import uuid

import pytest
from test_lifecycle import MakeApp

pytestmark = pytest.mark.asterisk


async def test_start_freezes_the_startup_heap(make_app: MakeApp) -> None:
    # A full collection of a large heap took 43 ms and made a hole in live echo audio
    # under an AudioSocket flood; run() froze the heap, an app embedded with start()
    # did not.
    gc.unfreeze()
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's defaults
    assert gc.get_freeze_count() == 0
    try:
        await make_app(app_name=f"voxtra-gc-{uuid.uuid4().hex[:8]}")
        assert gc.get_freeze_count() > 0
        # the middle generation is collected rarely: at 200 agent calls it ran every
        # 0.4 s for 5-11 ms (voxtra/media/collector.py); young collections unchanged
        assert gc.get_threshold() == (700, 1000, 10)
    finally:
        gc.set_threshold(*before)
