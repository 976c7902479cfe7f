"""The media tests' shared fixture: ``peers``, the far ends an engine test makes
(:mod:`media.rtp_peers`), closed after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from media.rtp_peers import Peer


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.sock.close()
