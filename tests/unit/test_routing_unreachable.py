"""A route that can never be reached is said so when it is declared: after any
catch-all route (not only right after one), and when an earlier route has the very
same criteria (a route declared twice). Both used to be taken silently, the handler
never run (docs/routing.md promises the warning)."""

from __future__ import annotations

import logging

import pytest

from voxtra import CallSession
from voxtra.routing import Route, Router


async def sales(call: CallSession) -> None:
    """A handler."""


async def support(call: CallSession) -> None:
    """Another."""


async def fallback(call: CallSession) -> None:
    """A catch-all."""


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "voxtra.routing"]


def test_every_route_after_a_catch_all_is_said_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router()
    with caplog.at_level(logging.WARNING, logger="voxtra.routing"):
        router.add(Route(fallback))
        router.add(Route(sales, extension="100"))
        router.add(Route(support, extension="200"))
    assert _warnings(caplog) == [
        "route 'sales' is declared after catch-all route 'fallback' and will never be used",
        "route 'support' is declared after catch-all route 'fallback' and will never be used",
    ]


def test_a_route_declared_twice_is_said_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()
    with caplog.at_level(logging.WARNING, logger="voxtra.routing"):
        router.route("_1XX", caller="_555.", variables={"DEPT": "sales"})(sales)
        router.route("_1XX", caller="_555.", variables={"DEPT": "_s."})(support)  # differs
        router.route("_1XX", caller="_555.", variables={"DEPT": "sales"})(fallback)
    assert _warnings(caplog) == [
        "route 'fallback' is declared after route 'sales', which has the same criteria, "
        "and will never be used"
    ]
    assert [r.name for r in router.routes] == ["sales", "support", "fallback"]


def test_routes_that_differ_in_any_criterion_are_taken_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router()
    with caplog.at_level(logging.WARNING, logger="voxtra.routing"):
        router.add(Route(sales, extension="100"))
        router.add(Route(sales, extension="100", context="from-trunk"))
        router.add(Route(sales, extension="100", args=["ivr"]))
        router.add(Route(sales, number="100"))
        router.add(Route(sales, caller="100"))
        router.add(Route(sales, extension="100", variables={"DEPT": "sales"}))
        router.add(Route(sales, extension="_1XX"))
    assert _warnings(caplog) == []
