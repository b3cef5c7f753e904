"""What ``status`` and ``/metrics`` say about the backlog (DESIGN.md "Durability and
backlog"): the durability lag, the recovery point per artifact, the checkpoints coalescing
skipped and the upload cap."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cpvd.config.model import Config
from cpvd.pipeline.durability import Durability
from cpvd.state.queue import JobQueue

#: superseded jobs listed by ``status`` (newest first)
SUPERSEDED_LISTED = 20
#: queued jobs counted per artifact for the "behind" warning
WAITING_SCANNED = 1000


def backlog_report(
    cfg: Config, queue: JobQueue, durability: Durability, unpushed: int
) -> dict[str, Any]:
    """The ``durability``, ``behind``, ``superseded``, ``coalescing`` and ``upload_cap``
    parts of ``status``."""
    coalescing = [w.artifact for w in cfg.watches if w.coalesce]
    waiting = Counter(j.artifact for j in queue.list(states=("queued",), limit=WAITING_SCANNED))
    return {
        # saves arrive faster than they leave: more than one checkpoint of it waits
        "behind": [
            {"artifact": a, "waiting": n, "coalesce": a in coalescing}
            for a, n in sorted(waiting.items())
            if n > 1
        ],
        "durability": durability.report(unpushed),
        "superseded": [
            {
                "job_id": j.id,
                "artifact": j.artifact,
                "path": j.source,
                "at": j.updated_at,
                "superseded_by": (j.result or {}).get("superseded_by"),
            }
            for j in queue.list(states=("superseded",), limit=SUPERSEDED_LISTED)
        ],
        "coalescing": coalescing,
        "upload_cap": cfg.storage.max_upload_rate,
    }


class BacklogCollector(Collector):
    """``cpv_durability_lag_seconds`` and ``cpv_recovery_point_timestamp_seconds``, read at
    scrape time."""

    def __init__(self, durability: Durability, unpushed: Callable[[], int]) -> None:
        self.durability = durability
        self.unpushed = unpushed

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "cpv_durability_lag_seconds",
            "Age of the oldest complete checkpoint not yet a pushed version (0: none).",
        )
        lag.add_metric([], self.durability.lag(self.unpushed()))
        point = GaugeMetricFamily(
            "cpv_recovery_point_timestamp_seconds",
            "When the newest pushed version's checkpoint was complete, per artifact.",
            labels=["artifact"],
        )
        for artifact, at in sorted(self.durability.recovery_points().items()):
            point.add_metric([artifact], at)
        yield from (lag, point)


def register(
    registry: CollectorRegistry, durability: Durability, unpushed: Callable[[], int]
) -> None:
    registry.register(BacklogCollector(durability, unpushed))
