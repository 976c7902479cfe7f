"""Where routers and set-up functions of other platform modules register themselves.

:func:`~voxtra.platform.api.create_api` imports the optional modules named in
:data:`OPTIONAL_MODULES` (when they exist), which call :func:`register` at import; then
it includes every registered router and calls every set-up function with the
:class:`~voxtra.platform.platform.Platform` (to add ``platform.on_start`` /
``on_stop`` hooks: part 2's engines). The factory itself is never edited for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from voxtra.platform.platform import Platform

__all__ = ["OPTIONAL_MODULES", "ROUTERS", "SETUPS", "register"]

OPTIONAL_MODULES = (
    "voxtra.platform.api.campaigns",
    "voxtra.platform.api.schedules",
    "voxtra.platform.ui",  # the operator page (issue 14)
)
"""Imported by ``create_api`` if present (part 2 of issue 10)."""

ROUTERS: list[APIRouter] = []
SETUPS: list[Callable[[Platform], None]] = []


def register(
    router: APIRouter | None = None, setup: Callable[[Platform], None] | None = None
) -> None:
    """Add ``router`` to every API made from now on, and ``setup`` to run on its platform.

    Routes take the platform with ``Depends(platform_of)`` and check scopes with
    ``Depends(require("calls:write"))`` (:mod:`voxtra.platform.api.auth`).
    """
    if router is not None and router not in ROUTERS:
        ROUTERS.append(router)
    if setup is not None and setup not in SETUPS:
        SETUPS.append(setup)
