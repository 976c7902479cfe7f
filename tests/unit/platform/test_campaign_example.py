"""examples/campaign.py runs its campaign to the end on FakeAsterisk (as a user would
with ``python examples/campaign.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "campaign.py"


async def test_the_campaign_example_finishes_with_each_outcome() -> None:
    spec = importlib.util.spec_from_file_location("campaign_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    progress = await module.demo()
    # six contacts: one busy twice (max_attempts 2), one unanswered (not retried)
    assert progress["contacts"] == {"completed": 4, "busy": 1, "no_answer": 1}
    assert progress["attempts"] == {"completed": 4, "busy": 2, "no_answer": 1}
