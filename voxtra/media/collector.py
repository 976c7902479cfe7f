"""The garbage collector in a process that carries calls: when, and how often.

Reference counting frees almost everything a call makes; the cyclic collector only has
to find cycles, but each of its runs stops the event loop while it walks the objects of
the generations it collects, and the loop is the 20 ms media clock.

Measured at 200 agent calls on one core (``bench/agent_density.py``, gc callbacks timed):

- the start-up heap: a full collection walked it all (110-170 ms each, six of them while
  the calls started). ``gc.freeze()`` once start-up is done moves it out of the
  collector's way for good;
- the middle generation: with Python's default of one middle collection every 10 young
  ones, it ran every 0.4 s and took 5-11 ms each time, walking the 15,000 objects the
  calls had in flight (queued audio chunks, coroutines, futures, timers). Each was a
  late tick and a turn held up: with it, turn latency p95 24.6-25.7 ms and pacing p99
  at the send 2.45-4.22 ms; collected every 100 young ones, 17.5-20.7 ms and
  1.80-2.02 ms; every 1,000, 14.6-14.8 ms and 1.28-1.57 ms, and 8% less CPU (alternated
  runs, a quiet box). Young collections stay as they are (700 objects, about 0.1 ms).

That rare middle collection is cheap only while the calls leave no reference cycles:
until session 8 each call left 50 objects in two cycles (its session and its control),
which waited there for it. Against Asterisk, 10,000 calls 50 at a time (a box four
times slower than the one above): one middle collection of 1.29 s, dispatch max 1.3 s,
RSS 237 MB; without the cycles none, 0.10 s and 94 MB. tests/unit/test_call_garbage.py
keeps a call cycle-free.
"""

from __future__ import annotations

import gc

__all__ = ["MIDDLE_THRESHOLD", "settle_collector"]

MIDDLE_THRESHOLD = 1000
"""Young collections between two collections of the middle generation (Python: 10)."""


def settle_collector() -> None:
    """Once a long-running process's start-up is done: freeze what exists (it is never
    collected) and collect the middle generation every ``MIDDLE_THRESHOLD`` young
    collections. A higher threshold the process set itself is kept."""
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if middle < MIDDLE_THRESHOLD:
        gc.set_threshold(young, MIDDLE_THRESHOLD, old)
