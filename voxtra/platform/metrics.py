"""Prometheus metrics of the platform (``GET /metrics``), in a registry of its own.

A registry per platform, not the process-wide default: two platforms in one process (the
tests) would otherwise collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PlatformMetrics"]

# Seconds; a voice agent's answer is expected within ~0.5-1.5 s of the caller's end of
# speech: finer buckets there.
_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class PlatformMetrics:
    """The platform's collectors; ``registry`` is what ``/metrics`` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "voxtra_calls",
            "Calls that reached a final status, by status and direction",
            ["status", "direction"],
            registry=self.registry,
        )
        self.active_calls = Gauge(
            "voxtra_active_calls", "Calls in progress in this process", registry=self.registry
        )
        self.turn_latency = Histogram(
            "voxtra_turn_latency_seconds",
            "From the caller's end of speech to the agent's first audio, and its stages",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "voxtra_provider_errors",
            "Speech provider failures and timeouts, by stage",
            ["stage", "timed_out"],
            registry=self.registry,
        )
        self.barge_ins = Counter(
            "voxtra_barge_ins", "Times a caller interrupted the agent", registry=self.registry
        )
        self.dtmf_dropped = Counter(
            "voxtra_dtmf_dropped",
            "DTMF digits dropped because a call's queue was full",
            registry=self.registry,
        )
        self.store_writes_dropped = Counter(
            "voxtra_store_writes_dropped",
            "Call records not written because the store's queue was full",
            registry=self.registry,
        )
        self.store_writes_failed = Counter(
            "voxtra_store_writes_failed",
            "Call records not written because the store refused them, or was still out of "
            "reach when the platform stopped (each logged with its call)",
            registry=self.registry,
        )
        self.media_frames = Counter(
            "voxtra_media_frames",
            "Media frames of ended calls, by kind: in, out, lost (never arrived), late "
            "(after their slot), concealed (filled in for lost ones)",
            ["kind"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "voxtra_api_requests",
            "API requests by method, route and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
