"""The backlog through the real daemon (DESIGN.md "Durability and backlog"): the durability
lag and recovery point in ``status`` and ``/metrics``, and ``coalesce = true`` skipping the
waiting checkpoints that a newer one supersedes, never the one uploading nor a pushed one."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import (
    DaemonProcess,
    Watch,
    cpvctl,
    events_of,
    raw_request,
    tags,
    versions_of,
    wait_for,
)

MIB = 1 << 20
ART = "team/model"


def _metric(d: DaemonProcess, name: str, labels: str = "") -> float | None:
    body = raw_request(d.socket, "GET", "/metrics").body.decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.M)
    return None if m is None else float(m.group(1))


def _queued(d: DaemonProcess, name: str) -> bool:
    return any(Path(e["path"]).name == name for e in events_of(d.socket, "queued"))


def _jobs(d: DaemonProcess, state: str) -> list[dict]:  # type: ignore[type-arg]
    return [j for j in d.client().status()["jobs"] if j["state"] == state]


def test_durability_lag_grows_while_uploads_wait_and_is_zero_once_pushed(
    daemon_factory: Callable[..., DaemonProcess], short_tmp: Path, bare_remote: Path
) -> None:
    watch = short_tmp / "w"
    d = daemon_factory(watches=[Watch(watch, ART)], remote=bare_remote)
    d.start()
    c = d.client()
    c.pause()
    (watch / "a.bin").write_bytes(os.urandom(4096))
    wait_for(lambda: c.status()["queue"]["queued"] == 1, what="the checkpoint queued")
    first = c.status()["durability"]["lag_seconds"]
    time.sleep(1.5)
    st = c.status()
    assert st["durability"]["lag_seconds"] >= first + 1.0
    assert st["durability"]["recovery_points"] == {}  # nothing pushed yet
    assert (_metric(d, "cpv_durability_lag_seconds") or 0.0) >= first + 1.0
    human = cpvctl(d.socket, "status", check=True).stdout
    assert "durability lag: " in human and "oldest checkpoint not yet a pushed version" in human

    c.resume()
    wait_for(lambda: tags(bare_remote) == [f"{ART}@v1.0.0"], what="the version pushed")
    st = wait_for(
        lambda: (s := c.status())["durability"]["lag_seconds"] == 0 and s, what="lag back to 0"
    )
    point = st["durability"]["recovery_points"][ART]
    assert point["age_seconds"] < 60
    assert _metric(d, "cpv_durability_lag_seconds") == 0.0
    assert _metric(d, "cpv_recovery_point_timestamp_seconds", f'{{artifact="{ART}"}}') == (
        point["at"]
    )
    st = json.loads(cpvctl(d.socket, "status", "--json", check=True).stdout)
    assert st["durability"]["lag_seconds"] == 0
    assert ART in st["durability"]["recovery_points"]


def test_coalesce_skips_superseded_waiting_checkpoints_but_not_running_or_pushed_ones(
    daemon_factory: Callable[..., DaemonProcess], short_tmp: Path, bare_remote: Path
) -> None:
    """While ``a`` uploads (a 1 MiB/s cap holds it), a pushed checkpoint and ``b``, ``c``
    arrive: ``b`` is superseded by ``c``; ``a`` (uploading) and the pushed one are versioned."""
    watch = short_tmp / "w"
    d = daemon_factory(
        watches=[
            Watch(watch, ART, exclude=["manual-*"], extra={"coalesce": "true"}),
        ],
        remote=bare_remote,
        extra_storage={"max_upload_rate": "1MiB"},
    )
    d.start()
    c = d.client()
    (watch / "a.bin").write_bytes(os.urandom(6 * MIB))
    wait_for(lambda: _jobs(d, "running"), what="a's job running")
    manual = watch / "manual-1.bin"
    manual.write_bytes(os.urandom(4096))
    c.push(str(manual), ART)
    for name in ("b.bin", "c.bin"):  # in this order, each queued before the next
        (watch / name).write_bytes(os.urandom(4096))
        wait_for(lambda n=name: _queued(d, n), what=f"{name} queued")  # type: ignore[misc]
    wait_for(lambda: len(versions_of(d, ART)) == 3, timeout=60, what="three versions")
    sources = sorted(Path(v["source"]).name for v in c.versions(ART))
    assert sources == ["a.bin", "c.bin", "manual-1.bin"]
    superseded = events_of(d.socket, "job.superseded")
    assert [Path(e["path"]).name for e in superseded] == ["b.bin"]
    assert Path(superseded[0]["newer_path"]).name == "c.bin"
    st = c.status()
    assert st["queue"]["superseded"] == 1
    assert [Path(j["path"]).name for j in st["superseded"]] == ["b.bin"]
    assert st["upload_cap"] == MIB
    human = cpvctl(d.socket, "status", check=True).stdout
    assert "upload cap: 1.0 MiB/s" in human
    assert "superseded (coalesce)" in human and "b.bin" in human
    # a rescan or a restart never queues the superseded checkpoint again
    d.stop()
    d.start()
    time.sleep(3)  # a rescan (rescan_seconds = 2) and the start-up scan
    assert len(versions_of(d, ART)) == 3
    assert d.client().status()["queue"]["queued"] == 0
