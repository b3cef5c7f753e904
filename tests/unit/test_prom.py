"""Prometheus text exposition 0.0.4: checked with a small strict parser."""

from __future__ import annotations

import math
import re
import threading

import pytest

from cpvd.api.metrics import CONTENT_TYPE, DaemonMetrics, Registry

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
    m = DaemonMetrics.create()
    depth = {"n": 4}
    m.queue_depth.set_function(lambda: depth["n"])
    m.jobs_total.inc(state="done")
    m.jobs_total.inc(2, state="failed")
    m.bytes_uploaded_total.inc(1_073_741_824)
    m.failures_total.inc(reason="storage_unreachable")
    tricky = 'team/a"b\\c\nd'
    m.versions_total.inc(artifact=tricky)
    m.versions_total.inc(artifact="vision/resnet50")
    m.unpushed_versions.set(3)
    m.storage_up.set(1)
    for seconds in (0.05, 0.7, 0.7, 42.0, 5000.0):
        m.job_duration_seconds.observe(seconds)

    helps, types, samples = parse(m.render())
    assert types == {
        "cpv_queue_depth": "gauge",
        "cpv_jobs_total": "counter",
        "cpv_bytes_uploaded_total": "counter",
        "cpv_job_duration_seconds": "histogram",
        "cpv_failures_total": "counter",
        "cpv_versions_total": "counter",
        "cpv_unpushed_versions": "gauge",
        "cpv_storage_up": "gauge",
    }
    assert all(helps[name] for name in types)
    assert _value(samples, "cpv_queue_depth") == 4
    depth["n"] = 9  # a function gauge is read at render time
    assert _value(parse(m.render())[2], "cpv_queue_depth") == 9
    assert _value(samples, "cpv_jobs_total", state="failed") == 2
    assert _value(samples, "cpv_bytes_uploaded_total") == 1_073_741_824
    assert _value(samples, "cpv_versions_total", artifact=tricky) == 1  # escaping round-trips
    assert _value(samples, "cpv_unpushed_versions") == 3

    buckets = [(lab["le"], v) for n, lab, v in samples if n == "cpv_job_duration_seconds_bucket"]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    assert buckets[-1][0] == "+Inf" and buckets[-1][1] == 5
    assert dict(buckets)["1"] == 3  # 0.05, 0.7, 0.7
    assert _value(samples, "cpv_job_duration_seconds_count") == 5
    assert _value(samples, "cpv_job_duration_seconds_sum") == pytest.approx(5043.45)
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_labelled_histogram_and_special_values() -> None:
    reg = Registry()
    h = reg.histogram("x_seconds", "Help with \\ and\nnewline.", ("step",), buckets=(1, 2))
    g = reg.gauge("x_level", "Level.", ("k",))
    broken = reg.gauge("x_broken", "Reads a source that fails.", function=lambda: 1 / 0)
    assert broken is reg.get("x_broken")
    h.observe(1.5, step="upload")
    h.observe(0.5, step="hash")
    g.set(math.inf, k="up")
    g.set(-math.inf, k="down")
    g.set(0.25, k="frac")
    text = reg.render()
    assert "# HELP x_seconds Help with \\\\ and\\nnewline.\n" in text
    _, types, samples = parse(text)
    assert types["x_seconds"] == "histogram" and types["x_broken"] == "gauge"
    assert _value(samples, "x_seconds_bucket", step="upload", le="1") == 0
    assert _value(samples, "x_seconds_bucket", step="upload", le="2") == 1
    assert _value(samples, "x_seconds_bucket", step="hash", le="1") == 1
    assert _value(samples, "x_level", k="up") == math.inf
    assert _value(samples, "x_level", k="down") == -math.inf
    assert _value(samples, "x_level", k="frac") == 0.25
    assert math.isnan(_value(samples, "x_broken"))
    assert h.count(step="upload") == 1 and h.count(step="none") == 0


def test_misuse_is_refused() -> None:
    reg = Registry()
    c = reg.counter("c_total", "C.", ("state",))
    with pytest.raises(ValueError, match="decrease"):
        c.inc(-1, state="x")
    with pytest.raises(ValueError, match="labels"):
        c.inc(reason="x")
    with pytest.raises(ValueError, match="labels"):
        c.inc()
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("c_total", "again")
    for bad_name in ("1abc", "a-b", "a b", ""):
        with pytest.raises(ValueError, match="metric name"):
            reg.gauge(bad_name, "x")
    with pytest.raises(ValueError, match="label name"):
        reg.gauge("g", "x", ("__reserved",))
    with pytest.raises(ValueError, match="reserved"):
        reg.histogram("h", "x", ("le",))
    with pytest.raises(ValueError, match="function gauge"):
        reg.gauge("g2", "x", ("k",), function=lambda: 1.0)
    assert c.value(state="x") == 0


def test_counter_is_thread_safe() -> None:
    reg = Registry()
    c = reg.counter("n_total", "N.")

    def work() -> None:
        for _ in range(5000):
            c.inc()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _value(parse(reg.render())[2], "n_total") == 20000
