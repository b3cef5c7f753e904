"""The metrics ``GET /metrics`` exports, in Prometheus text format (``prometheus_client``).

Created in one place so names and help texts stay consistent; each daemon has its own
registry (not the library's global one), so tests can make several.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: what ``generate_latest`` writes (the library's CONTENT_TYPE_LATEST now names format 1.0.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: a job takes from a fraction of a second (a small file) to many minutes (a 100 GB shard set)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class DaemonMetrics:
    """One registry of the daemon's metrics. The worker reports finished jobs and failures;
    the gauges read the queue and health at scrape time; nothing else writes here."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.queue_depth = Gauge("cpv_queue_depth", "Jobs queued or running.", registry=reg)
        self.unpushed_versions = Gauge(
            "cpv_unpushed_versions", "Commits not yet on the registry remote.", registry=reg
        )
        self.storage_up = Gauge(
            "cpv_storage_up", "1 when the last storage operation succeeded.", registry=reg
        )
        self.jobs_total = Counter(
            "cpv_jobs_total", "Finished jobs by final state.", ["state"], registry=reg
        )
        self.bytes_uploaded_total = Counter(
            "cpv_bytes_uploaded_total", "Bytes of new versions stored.", registry=reg
        )
        self.job_duration_seconds = Histogram(
            "cpv_job_duration_seconds",
            "Time from claim to version.",
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.failures_total = Counter(
            "cpv_failures_total", "Failed job attempts by error type.", ["reason"], registry=reg
        )
        self.versions_total = Counter(
            "cpv_versions_total", "Versions made.", ["artifact"], registry=reg
        )

    def read_state(
        self,
        queue_depth: Callable[[], float],
        unpushed: Callable[[], float],
        storage_up: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time from the daemon's own state."""
        self.queue_depth.set_function(queue_depth)
        self.unpushed_versions.set_function(unpushed)
        self.storage_up.set_function(storage_up)

    def job_done(self, state: str, seconds: float, size: int, artifact: str) -> None:
        self.jobs_total.labels(state=state).inc()
        self.job_duration_seconds.observe(seconds)
        if state == "done":
            self.bytes_uploaded_total.inc(size)
            self.versions_total.labels(artifact=artifact).inc()

    def failure(self, reason: str) -> None:
        self.failures_total.labels(reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
