"""Group ``cost`` (issue 18, target 5): what versioning a 1 GiB checkpoint costs the machine.

- **CPU-seconds**: utime+stime of the daemon's process tree (its threads, and the ``git``
  children it reaped) from just before the rename-in until the tag is on the remote, against
  the CPU time of md5 + a raw boto3 upload of the same bytes, measured in a child process
  (``benchmarks.cost_child md5-upload``, the work alone), in the same run.
- **Trainer slowdown**: a CPU-bound "trainer" process (``cost_child trainer``: a fixed
  number of SHA-1s of a 1 MiB buffer per step) runs throughout; the median step time while
  a version is made, over the median step in the seconds before it. Measured for a daemon
  at ``[daemon] nice = 10`` (the default) and one at ``nice = 0``, and for the raw md5 +
  upload child, taking turns.

The moto server stands in for S3, which in production is on another machine; it runs at
normal priority, so its CPU weighs on the trainer in every route alike (reniced to 19 on
this shared, loaded machine it was starved: one 1 GiB version took 91 s).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.procs import (
    MIB,
    Daemon,
    MotoServer,
    Watch,
    cpu_seconds,
    empty_bucket,
    make_bare_remote,
    remote_tags,
    stop_group,
)
from benchmarks.report import Figure

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

SECTION = "12. CPU cost and trainer slowdown (issue 18)"
BEFORE_SECONDS = 4.0
STEP_HASHES = 48  # ~60-80 ms per step here


@dataclass
class NiceDaemon(Daemon):
    """The benchmark daemon with ``[daemon] nice`` set."""

    nice: int = 10

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        line = f"[daemon]\nnice = {self.nice}\n"
        self.config_path.write_text(text.replace("[daemon]\n", line, 1))


class Trainer:
    """The ``cost_child trainer`` process; ``steps(a, b)``: durations of steps inside [a, b]."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.cost_child", "trainer", str(STEP_HASHES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, text=True,
        )  # fmt: skip
        self.lines: list[tuple[float, float]] = []
        import threading

        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            a, b = line.split()
            self.lines.append((float(a), float(b)))

    def steps(self, start: float, end: float) -> list[float]:
        return [b - a for a, b in list(self.lines) if a >= start and b <= end]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            stop_group(self.proc)


def cost_group(b: Bench) -> None:
    from benchmarks.scenarios import write_random

    size = (64 if b.plan.quick else 1024) * MIB
    gdir = b.dir("cost")
    src = gdir / "staging" / "ckpt.bin"
    src.parent.mkdir()
    write_random(src, size)
    with MotoServer() as moto:
        bucket = moto.new_bucket()
        s3 = moto.client()
        s3.upload_file(str(src), bucket, "warm-up")  # a new server's first upload is slower
        empty_bucket(s3, bucket)
        daemons = [_daemon(gdir, moto.endpoint, bucket, nice) for nice in (10, 0)]
        try:
            for d in daemons:
                d.start()
                _warm_up(d, gdir)
            trainer = Trainer()
            try:
                Runs(b, gdir, src, moto.endpoint, bucket, s3, trainer, daemons).all()
            finally:
                trainer.stop()
        finally:
            for d in daemons:
                d.stop()
    shutil.rmtree(gdir, ignore_errors=True)


def _daemon(gdir: Path, endpoint: str, bucket: str, nice: int) -> NiceDaemon:
    root = gdir / f"d{nice}"
    return NiceDaemon(root=root, watches=[Watch(root / "watch", f"bench/cost-n{nice}")],
                      storage_url=f"s3://{bucket}/n{nice}", endpoint_url=endpoint,
                      remote=make_bare_remote(gdir / f"remote{nice}.git"), nice=nice)  # fmt: skip


def _warm_up(d: Daemon, gdir: Path) -> None:
    from benchmarks.scenarios import wait_until

    warm = gdir / "staging" / "warm.bin"
    warm.write_bytes(os.urandom(4096))
    os.rename(warm, d.watches[0].path / "warm.bin")
    assert d.remote is not None
    remote, prefix = d.remote, d.watches[0].artifact + "@"
    wait_until(lambda: len(remote_tags(remote, prefix)) >= 1, 120, "the warm-up version")


RAW = "md5 + raw boto3 upload, cpvd's client settings (unsigned payload)"
SIGNED = "md5 + raw boto3 upload, boto3's defaults (SHA-256 payload signing over http)"


@dataclass
class Runs:
    b: Bench
    gdir: Path
    src: Path
    endpoint: str
    bucket: str
    s3: object
    trainer: Trainer
    daemons: list[NiceDaemon]
    figures: dict[str, Figure] = field(default_factory=dict)

    def add(self, label: str, unit: str, value: float, note: str = "") -> None:
        """One sample of the figure ``label`` (made at its first sample)."""
        if label not in self.figures:
            self.figures[label] = self.b.results.figure(SECTION, label, unit, note=note)
        self.figures[label].samples.append(value)

    def route_names(self) -> list[str]:
        return [f"daemon, nice {d.nice}" for d in self.daemons] + [RAW, SIGNED]

    def all(self) -> None:
        names = self.route_names()
        gib = self.src.stat().st_size / (1024 * MIB)
        for i in range(self.b.plan.runs):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                with self.src.open("r+b") as f:
                    f.write(uuid.uuid4().bytes)  # new content, new md5
                os.sync()
                cpu, wall, before, during = self.one(name)
                self.add(f"{name}: CPU-seconds per GiB", "s", cpu / gib,
                         "utime+stime; the daemon's: its process tree, git included")  # fmt: skip
                self.add(f"{name}: wall time", "s", wall)
                note = f"median step while versioning / median in the {BEFORE_SECONDS:g} s before"
                self.add(f"{name}: trainer step time, during / before", "x", during / before, note)
                self.add("trainer step time before (all routes)", "ms", before * 1000)
                self.b.log(f"[cost] run {i}: {name}: {cpu:.2f} CPU-s, {wall:.1f} s, "
                           f"trainer x{during / before:.2f}")  # fmt: skip
                empty_bucket(self.s3, self.bucket)
        self.targets()

    def one(self, name: str) -> tuple[float, float, float, float]:
        t_a = time.monotonic()
        time.sleep(BEFORE_SECONDS)
        t_b = time.monotonic()
        if name.startswith("daemon"):
            d = self.daemons[self.route_names().index(name)]
            cpu = self.version(d)
        else:
            cpu = self.raw(sign=name == SIGNED)
        t_c = time.monotonic()
        before, during = self.trainer.steps(t_a, t_b), self.trainer.steps(t_b, t_c)
        if not before or not during:
            raise RuntimeError(f"{name}: the trainer logged no step ({len(before)}, {len(during)})")
        return cpu, t_c - t_b, statistics.median(before), statistics.median(during)

    def version(self, d: Daemon) -> float:
        from benchmarks.scenarios import tags_reach, wait_until

        assert d.remote is not None
        prefix = d.watches[0].artifact + "@"
        want = len(remote_tags(d.remote, prefix)) + 1
        dest = d.watches[0].path / f"ck-{uuid.uuid4().hex[:8]}.bin"
        cpu0 = cpu_seconds(d.pid)
        os.rename(self.src, dest)
        wait_until(tags_reach(d.remote, prefix, want), 900, f"the tag of {dest.name}")
        cpu = cpu_seconds(d.pid) - cpu0
        os.rename(dest, self.src)
        return cpu

    def raw(self, sign: bool) -> float:
        key = f"raw/{uuid.uuid4().hex}"
        argv = [sys.executable, "-m", "benchmarks.cost_child", "md5-upload", str(self.src),
                self.endpoint, self.bucket, key, "sign" if sign else "unsigned"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu"])

    def targets(self) -> None:
        r = self.b.results
        daemon = r.find(SECTION, f"{self.route_names()[0]}: CPU-seconds per GiB")
        raw = r.find(SECTION, f"{RAW}: CPU-seconds per GiB")
        signed = r.find(SECTION, f"{SIGNED}: CPU-seconds per GiB")
        if daemon is None or raw is None or signed is None:
            return
        r.target("CPU-seconds per GiB versioned: daemon / (md5 + raw upload)",
                 daemon.median / raw.median, "x", "<= 1.2x",
                 f"median daemon at nice 10 / median '{RAW}'")  # fmt: skip
        r.target("the same, against boto3's default client (payload signed)",
                 daemon.median / signed.median, "x", "",
                 "what a user's own boto3 script would spend on a plain-http endpoint")  # fmt: skip
        for name in self.route_names():
            f = r.find(SECTION, f"{name}: trainer step time, during / before")
            if f is not None:
                r.target(f"trainer slowdown while versioning: {name}", f.median, "x", "",
                         "median step while the 1 GiB is hashed and uploaded / median before "
                         "(2 cores; the trainer uses one)")  # fmt: skip
