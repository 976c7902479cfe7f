"""The ``fake_asterisk`` pytest fixture, installed with Voxtra (entry point ``pytest11``).

Any test of a project with Voxtra installed can ask for it::

    async def test_greeting(fake_asterisk):
        app = build_app()
        async with fake_asterisk.serve(app):
            call = await fake_asterisk.incoming(extension="1000", caller="+4930123")
            await call.wait_ended()
        assert call.played == ["sound:hello-world"]

It is function-scoped: each test gets a fresh :class:`~voxtra.testing.FakeAsterisk`,
closed (sockets, timers) after the test. Async fixtures need pytest-asyncio (or anyio's
plugin); with pytest-asyncio in strict mode, mark the tests ``@pytest.mark.asyncio``.

The plugin is loaded by pytest itself; do not list it in ``pytest_plugins`` as well
(pytest refuses a plugin registered twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from voxtra.testing.fake_asterisk import FakeAsterisk

__all__ = ["fake_asterisk"]

_F = TypeVar("_F", bound=Callable[..., Any])

try:
    import pytest_asyncio

    _async_fixture = cast(Callable[[_F], _F], pytest_asyncio.fixture)
except ImportError:  # anyio's pytest plugin takes plain async fixtures
    _async_fixture = cast(Callable[[_F], _F], pytest.fixture)


@_async_fixture
async def fake_asterisk() -> AsyncIterator[FakeAsterisk]:
    """A fresh in-process Asterisk (see :mod:`voxtra.testing.fake_asterisk`)."""
    # Imported here: pytest loads this plugin in every run of every project that has
    # Voxtra installed, and most of those runs never use the fixture.
    from voxtra.testing.fake_asterisk import FakeAsterisk

    fake = FakeAsterisk()
    try:
        yield fake
    finally:
        await fake.aclose()
