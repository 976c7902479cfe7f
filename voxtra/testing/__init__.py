"""Tools for testing Voxtra apps.

- :class:`FakeAsterisk` (and the ``fake_asterisk`` pytest fixture, installed with
  Voxtra): an in-process Asterisk to unit-test route handlers in milliseconds;
- :mod:`voxtra.testing.doubles`: scripted STT, LLM, TTS and VAD providers;
- :mod:`voxtra.testing.asterisk`, :mod:`voxtra.testing.pytest_plugin`,
  :mod:`voxtra.testing.local_caller`, :mod:`voxtra.testing.sipcaller`: a real Asterisk
  sandbox and callers, for tests that need real calls and audio.
"""

from voxtra.testing.fake_asterisk import FakeAsterisk, FakeAsteriskError, FakeBridge, FakeCall

__all__ = ["FakeAsterisk", "FakeAsteriskError", "FakeBridge", "FakeCall"]
