"""A tiny Prometheus metrics registry and the text exposition format 0.0.4 for ``GET /metrics``.

Why not prometheus_client: it is not a dependency, and the daemon needs only counters, gauges
and fixed-bucket histograms with labels. Every metric is thread-safe (workers update them,
the API thread renders them). A gauge may instead read its value at render time (queue depth
straight from the queue), so it is never stale.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: job durations run from a cached no-op (ms) to a multi-GiB upload (many minutes)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

LabelKey = tuple[str, ...]


def format_value(value: float) -> str:
    """Go-style float text as Prometheus expects: ``+Inf``, ``-Inf``, ``NaN``, integers bare."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_RE.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_RE.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} on {name}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names on {name}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError

    def render(self) -> str:
        return "\n".join(self.header() + self.samples()) + "\n"


class Counter(_Metric):
    """Only goes up; conventionally named ``*_total``."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelKey, float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot decrease")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_labels_text(self.labelnames, k)} {format_value(v)}" for k, v in items
        ]


class Gauge(_Metric):
    """Goes up and down; or, with ``function``, read at render time."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        function: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help, labelnames)
        if function is not None and labelnames:
            raise ValueError(f"{name}: a function gauge takes no labels")
        self._function = function
        self._values: dict[LabelKey, float] = {} if labelnames else {(): 0.0}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set_function(self, function: Callable[[], float] | None) -> None:
        if function is not None and self.labelnames:
            raise ValueError(f"{self.name}: a function gauge takes no labels")
        self._function = function

    def value(self, **labels: str) -> float:
        if self._function is not None:
            return float(self._function())
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        if self._function is not None:
            try:
                value = float(self._function())
            except Exception:  # a broken source must not break /metrics; NaN says "unknown"
                value = math.nan
            return [f"{self.name} {format_value(value)}"]
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_labels_text(self.labelnames, k)} {format_value(v)}" for k, v in items
        ]


@dataclass
class _HistogramState:
    counts: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(_Metric):
    """Fixed upper bounds; renders cumulative ``_bucket{le=...}``, ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> None:
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved in histograms")
        super().__init__(name, help, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct and non-empty")
        self.buckets = (*bounds, math.inf)
        self._states: dict[LabelKey, _HistogramState] = {}
        if not labelnames:
            self._states[()] = _HistogramState([0] * len(self.buckets))

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _HistogramState([0] * len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    state.counts[i] += 1
                    break
            state.total += value
            state.count += 1

    def count(self, **labels: str) -> int:
        with self._lock:
            state = self._states.get(self._key(labels))
            return 0 if state is None else state.count

    def samples(self) -> list[str]:
        lines: list[str] = []
        with self._lock:
            snapshot = [
                (k, list(s.counts), s.total, s.count)
                for k, s in sorted(self._states.items(), key=lambda kv: kv[0])
            ]
        names = (*self.labelnames, "le")
        for key, counts, total, count in snapshot:
            cumulative = 0
            for bound, n in zip(self.buckets, counts, strict=True):
                cumulative += n
                labels = _labels_text(names, (*key, format_value(bound)))
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            plain = _labels_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{plain} {format_value(total)}")
            lines.append(f"{self.name}_count{plain} {count}")
        return lines


M = TypeVar("M", bound=_Metric)


class Registry:
    """An ordered set of metrics rendered together."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def register(self, metric: M) -> M:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self.register(Counter(name, help, labelnames))

    def gauge(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        function: Callable[[], float] | None = None,
    ) -> Gauge:
        return self.register(Gauge(name, help, labelnames, function))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> Histogram:
        return self.register(Histogram(name, help, labelnames, buckets))

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def render(self) -> str:
        """The whole registry in text format 0.0.4 (ends with a newline)."""
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(m.render() for m in metrics)


@dataclass(frozen=True)
class DaemonMetrics:
    """The metrics cpvd exports, created in one place so names stay consistent."""

    registry: Registry
    queue_depth: Gauge
    jobs_total: Counter
    bytes_uploaded_total: Counter
    job_duration_seconds: Histogram
    failures_total: Counter
    versions_total: Counter
    unpushed_versions: Gauge
    storage_up: Gauge

    @classmethod
    def create(cls, registry: Registry | None = None) -> DaemonMetrics:
        reg = registry or Registry()
        return cls(
            registry=reg,
            queue_depth=reg.gauge("cpv_queue_depth", "Jobs queued or running."),
            jobs_total=reg.counter("cpv_jobs_total", "Jobs finished, by final state.", ("state",)),
            bytes_uploaded_total=reg.counter(
                "cpv_bytes_uploaded_total", "Bytes uploaded to the storage remote."
            ),
            job_duration_seconds=reg.histogram(
                "cpv_job_duration_seconds", "Time from claim to finish of a job."
            ),
            failures_total=reg.counter(
                "cpv_failures_total", "Failed job attempts, by reason (error code).", ("reason",)
            ),
            versions_total=reg.counter(
                "cpv_versions_total", "Versions created, by artifact.", ("artifact",)
            ),
            unpushed_versions=reg.gauge(
                "cpv_unpushed_versions", "Versions committed locally but not yet pushed."
            ),
            storage_up=reg.gauge(
                "cpv_storage_up", "1 when the storage remote answered the last check, else 0."
            ),
        )

    def render(self) -> str:
        return self.registry.render()
