"""/metrics in Prometheus text exposition 0.0.4 (prometheus_client), checked with a
small strict parser."""

from __future__ import annotations

import re

import pytest

from cpvd.api.metrics import CONTENT_TYPE, DaemonMetrics

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HELP_RE = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE_RE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE_RE = re.compile(rf"^({_NAME})(\{{.*\}})? (\S+)$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_VALUE_RE = re.compile(r"^(?:[+-]?Inf|NaN|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")

Sample = tuple[str, dict[str, str], float]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    inner = text[1:-1]
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(inner):
        m = _LABEL_RE.match(inner, pos)
        assert m, f"bad label set {text!r}"
        assert m.group(1) not in labels, f"duplicate label in {text!r}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def parse(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """Parse exposition text; assert the format rules. Returns (help, types, samples)."""
    assert text.endswith("\n"), "exposition must end with a newline"
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    family: str | None = None
    for line in text[:-1].split("\n"):
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            m = _HELP_RE.match(line)
            assert m and m.group(1) not in helps, line
            helps[m.group(1)] = m.group(2)
            family = m.group(1)
        elif line.startswith("# TYPE "):
            m = _TYPE_RE.match(line)
            assert m and m.group(1) not in types, line
            assert m.group(1) == family, "TYPE follows its HELP"
            types[m.group(1)] = m.group(2)
        else:
            m = _SAMPLE_RE.match(line)
            assert m, f"bad sample line {line!r}"
            name, label_text, value = m.groups()
            assert family is not None and family in types, "sample before its TYPE"
            allowed = {family}
            if types[family] == "histogram":
                allowed = {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
            assert name in allowed, f"{name} outside its family {family}"
            assert _VALUE_RE.match(value), f"bad value {value!r}"
            samples.append((name, _labels(label_text), float(value)))
    return helps, types, samples


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and lab == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_daemon_metrics_render_and_parse() -> None:
    """What the daemon exports, through prometheus_client, read by a strict parser."""
    m = DaemonMetrics()
    depth = {"n": 4}
    m.read_state(queue_depth=lambda: depth["n"], unpushed=lambda: 3, storage_up=lambda: 1.0)
    m.job_done("done", 0.05, 1_073_741_824, 'team/a"b\\c\nd')
    m.job_done("done", 0.7, 10, "vision/resnet50")
    m.job_done("unchanged", 0.7, 99, "vision/resnet50")  # no bytes, no version counted
    m.job_done("failed", 42.0, 0, "vision/resnet50")
    m.job_done("failed", 5000.0, 0, "vision/resnet50")
    m.failure("StorageError")

    helps, types, samples = parse(m.render().decode())
    for name, kind in {
        "cpv_queue_depth": "gauge",
        "cpv_jobs_total": "counter",
        "cpv_bytes_uploaded_total": "counter",
        "cpv_job_duration_seconds": "histogram",
        "cpv_failures_total": "counter",
        "cpv_versions_total": "counter",
        "cpv_unpushed_versions": "gauge",
        "cpv_storage_up": "gauge",
    }.items():
        assert types[name] == kind and helps[name], name
    assert _value(samples, "cpv_queue_depth") == 4
    depth["n"] = 9  # a function gauge is read at render time
    assert _value(parse(m.render().decode())[2], "cpv_queue_depth") == 9
    assert _value(samples, "cpv_jobs_total", state="failed") == 2
    assert _value(samples, "cpv_jobs_total", state="unchanged") == 1
    assert _value(samples, "cpv_bytes_uploaded_total") == 1_073_741_824 + 10
    tricky = 'team/a"b\\c\nd'
    assert _value(samples, "cpv_versions_total", artifact=tricky) == 1  # escaping round-trips
    assert _value(samples, "cpv_versions_total", artifact="vision/resnet50") == 1
    assert _value(samples, "cpv_failures_total", reason="StorageError") == 1
    assert _value(samples, "cpv_unpushed_versions") == 3

    buckets = [(lab["le"], v) for n, lab, v in samples if n == "cpv_job_duration_seconds_bucket"]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    assert buckets[-1][0] == "+Inf" and buckets[-1][1] == 5
    assert dict(buckets)["1.0"] == 3  # 0.05, 0.7, 0.7
    assert dict(buckets)["1800.0"] == 4  # a job of 83 minutes is past the last bucket
    assert _value(samples, "cpv_job_duration_seconds_count") == 5
    assert _value(samples, "cpv_job_duration_seconds_sum") == pytest.approx(5043.45)
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_each_daemon_has_its_own_registry() -> None:
    """Two daemons in one process (tests) must not share counters."""
    a, b = DaemonMetrics(), DaemonMetrics()
    a.failure("X")
    assert "cpv_failures_total{reason=\"X\"}" in a.render().decode()
    assert "cpv_failures_total{reason=\"X\"}" not in b.render().decode()
