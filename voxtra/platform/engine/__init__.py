"""The scheduling engine: a worker per process claims due schedules and campaign
contacts from the store (leases, ``FOR UPDATE SKIP LOCKED`` on Postgres) and places
them with the app's ``originate``. The rules it applies are sans-IO, in
:mod:`voxtra.platform.scheduling`."""

from voxtra.platform.engine.clock import Clock, ScaledClock, SystemClock
from voxtra.platform.engine.worker import Dialer, Notify, Worker

__all__ = ["Clock", "Dialer", "Notify", "ScaledClock", "SystemClock", "Worker"]
