"""The call kernel: one call's state and everything it owns, and the features on it.

Layers, each importing only those before it (a test enforces it, see
``docs/architecture.md``):

- :mod:`~voxtra.calls.state`: the plain vocabulary (states, end reasons, ids).
- :mod:`~voxtra.calls.host`: what a call needs from the app that runs it, as a
  protocol (the app implements it; nothing here imports the app).
- :mod:`~voxtra.calls.registry`: which call owns which channel, bridge and originate
  (plain, synchronous; the app dispatches events through it).
- :mod:`~voxtra.calls.context`: one call's kernel (ARI handle, event inbox and
  waiters, what it created, its task group, its one teardown).
- :mod:`~voxtra.calls.playback`, :mod:`~voxtra.calls.media`,
  :mod:`~voxtra.calls.recorder`, :mod:`~voxtra.calls.voice`: features that take the
  context.
- :mod:`~voxtra.calls.session`: :class:`CallSession`, the user's facade over them.

This package's ``__init__`` imports nothing, so importing one layer never pulls in
the ones above it.
"""
