"""settle_collector: the start-up heap frozen, the middle generation collected rarely."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from voxtra.media.collector import MIDDLE_THRESHOLD, settle_collector


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_freezes_and_raises_the_middle_threshold_only(restored: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    settle_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, MIDDLE_THRESHOLD, 10)


def test_a_higher_threshold_the_process_chose_is_kept(restored: None) -> None:
    gc.set_threshold(2000, 5000, 20)
    settle_collector()
    assert gc.get_threshold() == (2000, 5000, 20)
