"""Reference cycles in a test: the collector off, and what it would find.

The test files import it by name (``from garbage import ...``), as ``fake_apps``.
Why a call must leave no cycle: tests/unit/test_call_garbage.py.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_off() -> Iterator[None]:
    """Run the block with the cyclic collector off (what earlier code left collected
    first, so that it is not counted): an object in a cycle then never goes."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cyclic_garbage(kinds: tuple[type, ...]) -> list[str]:
    """The type names of the objects of ``kinds`` that only the cyclic collector would
    free now (they are in, or held by, a reference cycle nothing else holds)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [type(o).__name__ for o in gc.garbage if isinstance(o, kinds)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found
