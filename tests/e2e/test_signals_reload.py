"""Signals, pause/resume, events, metrics and manual pushes, through the real daemon.

SIGHUP reloads watches without losing queued work; SIGTERM drains and exits 0; a paused
artifact's checkpoint stays queued until resume; ``/v1/events`` streams detected -> queued
-> versioned; ``/metrics`` is Prometheus text; ``cpvctl push --wait`` prints the version and
a path outside every watch root is refused.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cpvctl.errors import CpvctlError
from tests.e2e.harness import (
    DaemonProcess,
    Watch,
    cpvctl,
    event_history,
    queue_depth,
    raw_request,
    versions_of,
    wait_for,
)

QUIET = 0.3 + 2.5  # settle + one rescan period


def paths_seen(d: DaemonProcess, types: tuple[str, ...] = ("detected", "queued")) -> set[str]:
    return {e["data"].get("path", "") for e in event_history(d.socket) if e.get("type") in types}


def test_sighup_adds_and_removes_watches_without_losing_queued_work(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    a, b = short_tmp / "a", short_tmp / "b"
    b.mkdir()
    d = daemon_factory(watches=[Watch(a, "s/a")])
    with d:
        assert d.proc is not None
        res = cpvctl(d.socket, "pause", "s/a")
        assert res.returncode == 0, res.stderr
        (a / "queued.bin").write_bytes(os.urandom(2000))
        wait_for(lambda: str(a / "queued.bin") in paths_seen(d, ("queued",)), what="queued")
        assert queue_depth(d) == 1
        # reload: watch b instead of a
        d.watches = [Watch(b, "s/b")]
        d.write_config()
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(
            lambda: [w["artifact"] for w in d.client().status()["watches"]] == ["s/b"],
            what="the reloaded watches",
        )
        (b / "new.bin").write_bytes(os.urandom(2000))
        wait_for(lambda: versions_of(d, "s/b") == ["v1.0.0"], timeout=30, what="s/b v1.0.0")
        (a / "ignored.bin").write_bytes(os.urandom(2000))
        # the queued work of the removed watch survived the reload, still paused
        assert queue_depth(d) == 1 and versions_of(d, "s/a") == []
        res = cpvctl(d.socket, "resume", "s/a")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: versions_of(d, "s/a") == ["v1.0.0"], timeout=30, what="s/a v1.0.0")
        time.sleep(QUIET)
        assert str(a / "ignored.bin") not in paths_seen(d)
        assert versions_of(d, "s/a") == ["v1.0.0"]
        # a broken config on SIGHUP keeps the running one
        d.config_path.write_text("[daemon\nnot toml")
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: "keeping the running config" in d.log(), what="reload refused")
        assert [w["artifact"] for w in d.client().status()["watches"]] == ["s/b"]
        d.write_config()


def test_sigterm_mid_job_exits_zero_within_the_drain_timeout_and_loses_nothing(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A drain timeout shorter than the job: the step is parked, the daemon exits 0, and the
    next start resumes it into exactly one version."""
    ck = short_tmp / "ck"
    drain = 0.2
    d = daemon_factory(watches=[Watch(ck, "s/big")], extra_daemon={"drain_timeout": drain})
    d.start()
    data = os.urandom(128 * 1024 * 1024)
    (ck / "big.bin").write_bytes(data)
    wait_for(
        lambda: any(e["type"] == "progress" for e in event_history(d.socket, quiet=0.05)),
        interval=0.02,
        what="the job running",
    )
    t0 = time.monotonic()
    assert d.stop(timeout=drain + 20) == 0
    print(f"\nSIGTERM with a 128 MiB job running -> exit in {time.monotonic() - t0:.2f}s")
    assert "stopping" in d.log()
    d.start()
    wait_for(lambda: versions_of(d, "s/big") == ["v1.0.0"], timeout=60, what="v1.0.0")
    time.sleep(QUIET)
    wait_for(lambda: queue_depth(d) == 0, what="idle queue")
    assert versions_of(d, "s/big") == ["v1.0.0"]
    assert d.client().show("s/big", "v1.0.0")["size"] == len(data)
    assert d.stop() == 0


def test_pause_resume_events_metrics_and_manual_push(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck, manual, outside = short_tmp / "ck", short_tmp / "manual", short_tmp / "outside"
    outside.mkdir()
    # the manual root settles slowly, so the push's own job is the one that versions
    d = daemon_factory(watches=[Watch(ck, "s/m"), Watch(manual, "s/manual", settle_seconds=30)])
    with d:
        c = d.client()
        # live event stream: detected -> queued -> versioned, in that order
        stream = c.events(read_timeout=30)
        (ck / "e1.bin").write_bytes(os.urandom(4096))
        order: list[str] = []
        for event, data in stream:
            if data.get("path") == str(ck / "e1.bin"):
                order.append(event)
            if event == "versioned":
                break
        stream.close()
        assert [e for e in order if e in ("detected", "queued", "versioned")] == [
            "detected",
            "queued",
            "versioned",
        ], order
        # paused: detected and queued, not versioned, until resumed
        assert c.pause("s/m")["paused"] == ["s/m"]
        assert d.client().status()["watches"][0]["paused"] is True
        (ck / "e2.bin").write_bytes(os.urandom(4096))
        wait_for(lambda: str(ck / "e2.bin") in paths_seen(d, ("queued",)), what="queued")
        time.sleep(1.5)
        status = c.status()
        assert status["queue"]["queued"] == 1 and versions_of(d, "s/m") == ["v1.0.0"]
        assert [j["state"] for j in status["jobs"]] == ["queued"]
        c.resume("s/m")
        wait_for(lambda: versions_of(d, "s/m")[0] == "v1.1.0", timeout=30, what="v1.1.0")

        # cpvctl push --wait prints the version
        (manual / "hand.bin").write_bytes(os.urandom(3000))
        res = cpvctl(d.socket, "push", "--wait", str(manual / "hand.bin"), "--artifact", "s/manual")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("s/manual@v1.0.0"), res.stdout
        # a path outside every watch root is refused, and nothing is read or queued
        (outside / "x.bin").write_bytes(b"x")
        res = cpvctl(d.socket, "push", str(outside / "x.bin"), "--artifact", "s/manual")
        assert res.returncode == 1 and "outside every watched directory" in res.stderr, res
        with pytest.raises(CpvctlError) as err:
            c.push(str(outside / "x.bin"), "s/m")
        assert err.value.code == "path_outside_watch" and err.value.status == 403
        assert str(outside / "x.bin") not in paths_seen(d)
        # the watch root itself is refused (issue 15 #11): it would version the whole watch
        res = cpvctl(d.socket, "push", str(manual), "--artifact", "s/manual")
        assert res.returncode == 1 and "is the watched directory itself" in res.stderr, res
        assert str(manual) not in paths_seen(d)

        # /metrics: Prometheus text with queue depth, bytes, durations, failures
        r = raw_request(d.socket, "GET", "/metrics")
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
        types, samples = parse_prometheus(r.body.decode())
        assert types["cpv_queue_depth"] == "gauge"
        assert types["cpv_bytes_uploaded_total"] == "counter"
        assert types["cpv_job_duration_seconds"] == "histogram"
        assert types["cpv_failures_total"] == "counter"
        assert samples["cpv_queue_depth"] == 0
        assert samples["cpv_bytes_uploaded_total"] >= 4096 * 2 + 3000
        assert samples["cpv_job_duration_seconds_count"] >= 3
        assert samples['cpv_job_duration_seconds_bucket{le="+Inf"}'] >= 3


_SAMPLE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\]|\\.)*\""
    r"(?:,[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\]|\\.)*\")*\})? (\S+)$"
)


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """A strict enough reader of the 0.0.4 text format: every line is a comment, a TYPE/HELP
    line or a well-formed sample of a declared metric."""
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"sample of an undeclared metric: {line!r}"
        samples[name + (m.group(2) or "")] = float(m.group(3))
        samples.setdefault(name, float(m.group(3)))
    return types, samples
