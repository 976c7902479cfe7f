"""The event loop a Voxtra process runs on: uvloop where it is installed, else asyncio's.

``voxtra run`` and ``voxtra serve`` (``VoxtraApp.run()``, ``voxtra.platform.serve``)
start their loop here; ``settings.event_loop`` (``VOXTRA_EVENT_LOOP``) chooses:

- ``"auto"`` (the default): uvloop when it can be imported (``pip install
  'voxtra[speed]'``), asyncio's loop otherwise;
- ``"uvloop"``: uvloop or a ``ConfigError`` saying how to install it;
- ``"asyncio"``: asyncio's own loop.

Why: a call setup through the control plane costs about a tenth less of Voxtra's CPU on
uvloop against Asterisk 22 (``bench/call_setup.py --rate 0 --calls 2000``, five
alternated pairs on the 2-core CI box, lower in 9 of 10: median 0.407 -> 0.373 ms a
call outbound, 0.390 -> 0.346 inbound; docs/performance.md).
The media path is no faster on it (its cost is numpy and the kernel's UDP), nor slower.
Code that starts its own loop (tests, ``asyncio.run``) is not affected.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from voxtra.errors import ConfigError

__all__ = ["EventLoopChoice", "LoopFactory", "loop_factory", "run"]

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

T = TypeVar("T")


def loop_factory(choice: EventLoopChoice = "auto") -> LoopFactory | None:
    """What makes the loop for ``choice``: uvloop's ``new_event_loop``, or None for
    asyncio's default loop."""
    if choice == "asyncio":
        return None
    if choice not in ("auto", "uvloop"):
        raise ConfigError(f"event_loop: expected 'auto', 'asyncio' or 'uvloop', got {choice!r}")
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "event_loop is 'uvloop' but uvloop is not installed: "
                "pip install 'voxtra[speed]' (or set event_loop to 'auto' or 'asyncio')"
            ) from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """Run ``main`` to completion on a new loop of the chosen kind (as ``asyncio.run``)."""
    try:
        factory = loop_factory(choice)
    except BaseException:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
