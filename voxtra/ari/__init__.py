"""The Asterisk REST Interface, with no framework logic.

:mod:`~voxtra.ari.client` (``AriClient``, typed REST methods) and
:mod:`~voxtra.ari.stream` (``AriEventStream``, the events kept alive) talk to Asterisk
through an :class:`~voxtra.ari.transport.AriTransport`:
:class:`~voxtra.ari.aiohttp_transport.AiohttpTransport` for a real Asterisk, or an
in-process one such as :class:`voxtra.testing.FakeAsterisk`.
"""
