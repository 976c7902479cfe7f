"""The scheduling engine: a worker per process claims due schedules and campaign
contacts from the store (leases, ``FOR UPDATE SKIP LOCKED`` on Postgres) and places
them with the app's ``originate``. The rules it applies are sans-IO, in
:mod:`voxtra.platform.scheduling`."""

from voxtra.platform.engine.clock import EngineClock, ScaledClock, SystemClock
from voxtra.platform.engine.worker import Dialer, Notify, SchedulingWorker

__all__ = ["Dialer", "EngineClock", "Notify", "ScaledClock", "SchedulingWorker", "SystemClock"]
