"""Hook gauges and counters on the daemon's /metrics registry, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cpvd.hooks.dispatcher import Dispatcher
from cpvd.hooks.record import HookRecord


class HookCollector(Collector):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        d = self.dispatcher
        pending = GaugeMetricFamily(
            "cpv_hook_pending", "Hook deliveries waiting in the outbox.", labels=["hook"]
        )
        failing = GaugeMetricFamily(
            "cpv_hook_failing", "Failed attempts since the hook's last success.", labels=["hook"]
        )
        delivered = CounterMetricFamily(
            "cpv_hook_deliveries", "Hook deliveries accepted since start.", labels=["hook"]
        )
        failures = CounterMetricFamily(
            "cpv_hook_failures", "Failed hook delivery attempts since start.", labels=["hook"]
        )
        counts = d.pending()
        for hook in d.config().hooks:
            rec = d.records.get(hook.name, HookRecord())
            pending.add_metric([hook.name], counts.get(hook.name, 0))
            failing.add_metric([hook.name], rec.failing)
            delivered.add_metric([hook.name], rec.delivered)
            failures.add_metric([hook.name], rec.failures)
        yield from (pending, failing, delivered, failures)


def register(registry: CollectorRegistry, dispatcher: Dispatcher) -> None:
    registry.register(HookCollector(dispatcher))
