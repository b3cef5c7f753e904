"""Group ``backlog`` (issue 18, "Robustness of the transfer path", items 4-5): saves that
come faster than the link, against ``[storage] max_upload_rate``, with and without
``coalesce = true`` on the watch.

A "trainer" renames a new checkpoint into the watch every ``interval`` seconds (a copy of
one random buffer with its first bytes made unique, written in a sibling directory) and
deletes all but its newest three, as ``save_total_limit`` does. The cap carries one
checkpoint per 1.5 intervals. Every second the harness reads ``status --json`` (durability
lag, queue) and the snapshot directory's size. The bytes on the wire are counted by a TCP
proxy in front of moto (benchmarks.byte_proxy), in 10 s windows. moto keeps objects in
memory, so objects older than 30 s are deleted during the run (the daemon never reads an
object again after its version is tagged).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.byte_proxy import CountingProxy
from benchmarks.procs import (
    MIB,
    Daemon,
    MotoServer,
    Watch,
    empty_bucket,
    make_bare_remote,
    remote_tags,
    run,
    toml_str,
)

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

SECTION = "10. Backlog: rate cap and coalescing (issue 18)"
ARTIFACT = "bench/backlog"
#: the trainer keeps this many checkpoints in its directory (save_total_limit)
KEEP = 3
#: moto objects older than this are deleted during a run (its memory)
OBJECT_AGE = 30.0


@dataclass(frozen=True)
class Shape:
    size: int
    interval: float
    duration: float
    #: the cap carries one checkpoint per this many intervals
    slower: float = 1.5

    @property
    def cap(self) -> int:
        return int(self.size / (self.interval * self.slower))

    @property
    def snapshot_bound(self) -> int:
        """``[daemon] snapshot_limit_bytes`` for the runs: room for six checkpoints."""
        return 6 * self.size


def shape_of(quick: bool) -> Shape:
    if quick:
        return Shape(size=32 * MIB, interval=1.0, duration=20.0)
    return Shape(size=256 * MIB, interval=2.0, duration=120.0)


def fit_to_link(shape: Shape, link: float) -> Shape:
    """The cap must bind, not the link: when the link measured in this run carries less
    than twice the cap, checkpoints shrink (interval and ratio kept) so the cap is half
    the link."""
    if shape.cap * 2 <= link:
        return shape
    size = max(4 * MIB, int(link / 2 * shape.interval * shape.slower) // MIB * MIB)
    return dataclasses.replace(shape, size=size)


@dataclass
class BacklogDaemon(Daemon):
    """The benchmark daemon with the cap, the snapshot bound and the watch's coalesce."""

    cap: int = 0
    snapshot_limit: int = 0
    coalesce: bool = False

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        text = text.replace(
            "[registry]\n", f"snapshot_limit_bytes = {self.snapshot_limit}\n[registry]\n", 1
        )
        text = text.replace(
            "[storage]\n", f"[storage]\nmax_upload_rate = {self.cap}\n", 1
        )
        text += f"coalesce = {toml_str(self.coalesce)}\n"  # the last table is the watch
        self.config_path.write_text(text)


@dataclass
class Trace:
    """One run's samples: (seconds since the first save, lag s, snapshot store bytes, bytes
    on disk under the snapshot directory, queued)."""

    samples: list[tuple[float, float, int, int, int]] = field(default_factory=list)
    written: int = 0
    behind_said: bool = False
    final_status: dict[str, Any] = field(default_factory=dict)


def backlog_group(b: Bench) -> None:
    shape = shape_of(b.plan.quick)
    gdir = b.dir("backlog")
    base = gdir / "base.bin"
    with open(base, "wb") as f:
        for _ in range(shape.size // (8 * MIB) or 1):
            f.write(os.urandom(min(8 * MIB, shape.size)))
    res = b.results
    with MotoServer() as moto:
        _raw_rate(moto, base)  # warms the new server (its first upload is its slowest)
        link = _raw_rate(moto, base)
        res.figure(SECTION, f"raw boto3 upload of {shape.size // MIB} MiB, no cap (the link)",
                   "MiB/s").samples.append(link / MIB)  # fmt: skip
        nominal, shape = shape, fit_to_link(shape, link)
        if shape != nominal:
            os.truncate(base, shape.size)
            res.notes.append(
                f"backlog: the link to moto carried {link / MIB:.0f} MiB/s on this loaded "
                f"machine, less than twice the nominal cap ({nominal.cap / MIB:.0f} MiB/s for "
                f"{nominal.size // MIB} MiB per {nominal.interval * nominal.slower:g} s), so "
                f"checkpoints were shrunk to {shape.size // MIB} MiB to keep the cap binding"
            )
        traces = {}
        for coalesce in (True, False):
            name = "coalesce" if coalesce else "no coalesce"
            b.log(f"[backlog] {name}: {shape.size // MIB} MiB every {shape.interval:g} s, "
                  f"cap {shape.cap / MIB:.1f} MiB/s, {shape.duration:.0f} s")  # fmt: skip
            traces[coalesce] = _one_run(b, moto, shape, base, gdir / name.replace(" ", "-"),
                                        coalesce)  # fmt: skip
    _report(b, shape, traces, link)
    shutil.rmtree(gdir, ignore_errors=True)


def _raw_rate(moto: MotoServer, base: Path) -> float:
    s3 = moto.client(sign_payload=False)
    bucket = moto.new_bucket()
    t = time.perf_counter()
    s3.upload_file(str(base), bucket, "raw.bin")
    rate = base.stat().st_size / (time.perf_counter() - t)
    empty_bucket(s3, bucket)
    return rate


def _one_run(
    b: Bench, moto: MotoServer, shape: Shape, base: Path, root: Path, coalesce: bool
) -> Trace:
    s3 = moto.client()
    bucket = moto.new_bucket()
    remote = make_bare_remote(root / "remote.git")
    watch, staging = root / "watch", root / "staging"
    staging.mkdir(parents=True)
    host, port = moto.endpoint.removeprefix("http://").split(":")
    proxy = CountingProxy(host, int(port))
    d = BacklogDaemon(
        root=root / "d", watches=[Watch(watch, ARTIFACT)], storage_url=f"s3://{bucket}/b",
        endpoint_url=proxy.url, remote=remote, cap=shape.cap,
        snapshot_limit=shape.snapshot_bound, coalesce=coalesce,
    )  # fmt: skip
    trace = Trace()
    started = time.monotonic()
    try:
        with d:
            writer = threading.Thread(target=_trainer, args=(shape, base, staging, watch, trace))
            started = time.monotonic()
            writer.start()
            try:
                _sample(d, shape, started, trace, s3, bucket)
            finally:
                writer.join()
            trace.final_status = d.client().status()
            human = run([sys.executable, "-m", "cpvctl", "--socket", str(d.socket), "status"])
            trace.behind_said = b"BEHIND" in human.stdout
            trace.samples.append((time.monotonic() - started, *_now(d)))
        trace.final_status["versions"] = len(remote_tags(remote, ARTIFACT + "@"))
        trace.final_status["proxy_windows"] = proxy.windows(
            10.0, between=(started, started + shape.duration)
        )
    finally:
        proxy.close()
        empty_bucket(s3, bucket)
    b.log(f"[backlog] {'coalesce' if coalesce else 'no coalesce'}: {trace.written} saved, "
          f"{trace.final_status['versions']} versions, max lag "
          f"{max(s[1] for s in trace.samples):.1f} s")  # fmt: skip
    return trace


def _trainer(shape: Shape, base: Path, staging: Path, watch: Path, trace: Trace) -> None:
    """A checkpoint every ``interval`` s for ``duration`` s; keeps the newest ``KEEP``."""
    start = time.monotonic()
    n = int(shape.duration / shape.interval)
    for i in range(n):
        time.sleep(max(0.0, start + i * shape.interval - time.monotonic()))
        tmp = staging / f"ckpt-{i:04d}.bin"
        shutil.copyfile(base, tmp)
        with open(tmp, "r+b") as f:
            f.write(f"checkpoint {i:06d} {time.time():.6f}".encode())
        os.rename(tmp, watch / tmp.name)
        trace.written += 1
        for old in sorted(watch.glob("ckpt-*.bin"))[:-KEEP]:
            old.unlink(missing_ok=True)


def _now(d: Daemon) -> tuple[float, int, int, int]:
    """Lag, bytes the snapshot store holds (whole snapshots and copies in progress), bytes
    on disk under it (also early-upload hardlinks that keep a released snapshot's inode
    alive until their upload stops), queued jobs."""
    st = d.client().status()
    store: dict[tuple[int, int], int] = {}
    disk: dict[tuple[int, int], int] = {}  # hardlinked files once each
    for dirpath, _, files in os.walk(d.root / "state" / "snapshots"):
        if "-rm-" in dirpath:  # released, being deleted (cpvd.pipeline.snapshot.release)
            continue
        for f in files:
            try:
                st_f = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            key = (st_f.st_dev, st_f.st_ino)
            disk[key] = st_f.st_size
            if not f.startswith(".staging-up-"):  # an early upload's link (file_upload)
                store[key] = st_f.st_size
    lag = float(st["durability"]["lag_seconds"])
    return lag, sum(store.values()), sum(disk.values()), int(st["queue"]["queued"])


def _sample(
    d: Daemon, shape: Shape, started: float, trace: Trace, s3: Any, bucket: str
) -> None:
    """Every second until the trainer stops: lag, snapshot bytes, queued; old objects go."""
    last_clean = started
    while (t := time.monotonic() - started) < shape.duration:
        trace.samples.append((t, *_now(d)))
        if time.monotonic() - last_clean > 5:
            _delete_old(s3, bucket)
            last_clean = time.monotonic()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started - t)))


def _delete_old(s3: Any, bucket: str) -> None:
    now = time.time()
    keys = [
        {"Key": o["Key"]}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
        if now - o["LastModified"].timestamp() > OBJECT_AGE
    ]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})


def _report(b: Bench, shape: Shape, traces: dict[bool, Trace], link: float) -> None:
    res = b.results
    for coalesce, tr in traces.items():
        name = "coalesce" if coalesce else "no coalesce"
        lags = [s[1] for s in tr.samples]
        fin = tr.final_status
        rows = (
            ("checkpoints saved", "", float(tr.written)),
            ("versions made (tags on the remote)", "", float(fin["versions"])),
            ("checkpoints superseded", "", float(fin["queue"].get("superseded", 0))),
            ("checkpoints still queued at the end", "", float(fin["queue"]["queued"])),
            ("durability lag, max", "s", max(lags)),
            ("durability lag, median", "s", statistics.median(lags)),
            ("durability lag at the end", "s", lags[-1]),
            ("snapshot store bytes, peak", "MiB", max(s[2] for s in tr.samples) / MIB),
            ("bytes on disk under the snapshot directory, peak", "MiB",
             max(s[3] for s in tr.samples) / MIB),
            ("status says BEHIND at the end (1 = yes)", "", float(tr.behind_said)),
        )
        for label, unit, value in rows:
            res.figure(SECTION, f"{name}: {label}", unit).samples.append(value)
        windows = [w / 10.0 for w in fin["proxy_windows"]]
        if windows:
            for label, value in (("min", min(windows)), ("median", statistics.median(windows)),
                                 ("max", max(windows))):  # fmt: skip
                res.figure(SECTION, f"{name}: upload rate on the wire, 10 s windows, {label}",
                           "MiB/s").samples.append(value / MIB)  # fmt: skip
        trend = " ".join(f"{s[1]:.0f}" for s in tr.samples[:: max(1, len(tr.samples) // 12)])
        res.notes.append(f"backlog, {name}: durability lag over time (s, ~every "
                         f"{shape.duration / 12:.0f} s): {trend}")  # fmt: skip
    _targets(b, shape, traces, link)


def _targets(b: Bench, shape: Shape, traces: dict[bool, Trace], link: float) -> None:
    res, on, off = b.results, traces[True], traces[False]
    res.target("backlog, coalesce: max durability lag", max(s[1] for s in on.samples), "s",
               f"< {2 * shape.interval:g} s", basis="two save intervals; lag sampled every "
               "second from status")  # fmt: skip
    floor = shape.interval + shape.size / shape.cap
    res.target("backlog, coalesce: max durability lag / (interval + one upload at the cap)",
               max(s[1] for s in on.samples) / floor, "x", "",
               basis=f"{floor:g} s: the least lag bound when the upload running is never "
               "skipped (a checkpoint saved just after an upload began waits for it, then "
               "for its own)")  # fmt: skip
    res.target("backlog, coalesce: peak snapshot space", max(s[2] for s in on.samples) / MIB,
               "MiB", f"<= {shape.snapshot_bound / MIB:.0f} MiB",
               basis="[daemon] snapshot_limit_bytes of the run")  # fmt: skip
    res.target("backlog, no coalesce: lag at the end / lag a third of the way",
               off.samples[-1][1] / max(1.0, off.samples[len(off.samples) // 3][1]), "x",
               "> 1x", basis="the lag grows")  # fmt: skip
    res.target("backlog, no coalesce: status says BEHIND", float(off.behind_said), "",
               ">= 1", basis="1 = the human status has a BEHIND line")  # fmt: skip
    for coalesce, tr in traces.items():
        windows = [w / 10.0 for w in tr.final_status["proxy_windows"]]
        steady = windows[1:-1] or windows  # the first and last windows hold a ramp
        if steady:
            name = "coalesce" if coalesce else "no coalesce"
            res.target(f"backlog, {name}: upload rate / cap, highest 10 s window",
                       max(steady) / shape.cap, "x", "<= 1.05x",
                       basis="bytes on the wire through a counting proxy, whole run "
                       "except the first and last windows")  # fmt: skip
            res.target(f"backlog, {name}: upload rate / cap, lowest 10 s window",
                       min(steady) / shape.cap, "x", "",
                       basis="how much of the cap the daemon used: between uploads it "
                       "commits, tags and pushes (the +-5 % of the cap on a busy link is "
                       "tests/integration/test_upload_rate.py)")  # fmt: skip
    res.notes.append(
        f"backlog: {shape.size // MIB} MiB every {shape.interval:g} s for "
        f"{shape.duration:.0f} s; cap {shape.cap / MIB:.1f} MiB/s (one checkpoint per "
        f"{shape.interval * shape.slower:g} s); the raw link to moto measured "
        f"{link / MIB:.0f} MiB/s in the same run; snapshot bound "
        f"{shape.snapshot_bound // MIB} MiB"
    )
