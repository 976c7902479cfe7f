"""An in-process Asterisk for unit tests: see :class:`FakeAsterisk`."""

from voxtra.testing.fake_asterisk.calls import (
    FakeAsteriskError,
    FakeBridge,
    FakeCall,
    FakePlayback,
    FakeRecording,
)
from voxtra.testing.fake_asterisk.core import DIAL_OUTCOMES, FakeAsterisk
from voxtra.testing.fake_asterisk.media import FakeRtpEnd

__all__ = [
    "DIAL_OUTCOMES",
    "FakeAsterisk",
    "FakeAsteriskError",
    "FakeBridge",
    "FakeCall",
    "FakePlayback",
    "FakeRecording",
    "FakeRtpEnd",
]
