"""Group 9 (``--only transfer``): checkpoints written inside the watch, and renamed in.

Issue 18, targets 1 and 2, measured against a raw boto3 upload of the same bytes to the
same moto server, in the same run:

(a) a safetensors file written as ``x.safetensors.tmp`` inside the watch by a writer
    process, as fast as it can in 8 MiB writes, then renamed to ``x.safetensors``;
(b) a torch-style zip written in place and closed once: stored records of 8 MiB each,
    written front to back (torch's writer streams; Python's zipfile given a file without
    ``seek`` does the same), central directory last;
    both timed from the writer's last act (the rename, the close: a monotonic timestamp
    the writer prints) to the tag on the bare remote, nothing subtracted;
(c) a file written in a sibling directory and renamed in from outside: (time minus the
    watch's quiet period) against md5 + a raw upload of the same bytes, one after the
    other.

The routes take turns run by run, so moto's drift and the machine's load fall on all alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.procs import MIB, Daemon, MotoServer, Watch, empty_bucket, make_bare_remote
from benchmarks.report import Figure, ratio
from benchmarks.scenarios import remote_tags, wait_until, write_random

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

SECTION = "9. Transfer: in-watch writers and renamed-in (issue 18)"
STEP = 8 * MIB
#: the in-watch writers' quiet period: proven checkpoints must not wait it out
WRITER_SETTLE = 2.0
#: the renamed-in watch's quiet period, subtracted from its figure
RENAMED_SETTLE = 0.2

#: the writer process: copies a staged body into the watch, prints its last act's time
WRITER = r"""
import os, sys, time, zipfile
kind, body, dest = sys.argv[1], sys.argv[2], sys.argv[3]
head = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else b""
step = 8 * 1024 * 1024
def chunks():
    with open(body, "rb") as f:
        while block := f.read(step):
            yield block
if kind == "tmp":
    tmp = dest + ".tmp"
    with open(tmp, "wb") as out:
        out.write(head)
        for block in chunks():
            out.write(block)
    os.rename(tmp, dest)
else:
    class Stream:  # no seek or tell: zipfile writes front to back, as torch's writer does
        def __init__(self, f): self.f = f
        def write(self, b): return self.f.write(b)
        def flush(self): self.f.flush()
    out = open(dest, "wb")
    with zipfile.ZipFile(Stream(out), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", os.urandom(4096))
        for k, block in enumerate(chunks()):  # one record per 8 MiB "tensor"
            z.writestr(f"archive/data/{k}", block)
    out.close()
print(time.time(), time.monotonic(), flush=True)
"""


def safetensors_head(n: int) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return struct.pack("<Q", len(header)) + header


@dataclass
class Ctx:
    b: Bench
    gdir: Path
    s3: Any
    bucket: str
    body: Path
    size: int
    daemon: Daemon
    remote: Path

    def fig(self, label: str, unit: str = "s", note: str = "") -> Figure:
        return self.b.results.figure(SECTION, label, unit, note=note)

    def mutate(self) -> None:
        with open(self.body, "r+b") as f:
            f.write(uuid.uuid4().bytes)

    def wait_tag(self, artifact: str, before: int) -> float:
        wait_until(
            lambda: len(remote_tags(self.remote, artifact + "@")) > before,
            900,
            f"a new tag of {artifact}",
        )
        return time.monotonic()

    def raw(self, path: Path) -> float:
        t = time.perf_counter()
        self.s3.upload_file(str(path), self.bucket, f"raw/{uuid.uuid4().hex}")
        return time.perf_counter() - t

    def after(self) -> None:
        wait_until(
            lambda: self.daemon.client().status()["queue"]["depth"] == 0, 300, "an empty queue",
            interval=0.1,
        )
        empty_bucket(self.s3, self.bucket)


def run_writer(kind: str, body: Path, dest: Path) -> tuple[float, float]:
    """Run the writer process (``kind`` "tmp" or "zip") from ``body`` to ``dest``; its last
    act's (wall clock, monotonic clock)."""
    argv = [sys.executable, "-c", WRITER, kind, str(body), str(dest)]
    if kind == "tmp":
        argv.append(safetensors_head(body.stat().st_size).hex())
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    wall, mono = (float(x) for x in out.stdout.split()[-2:])
    return wall, mono


def writer_route(
    c: Ctx, kind: str, i: int | str, body: Path | None = None
) -> tuple[float, Path, float]:
    """One in-watch writer; returns (last act -> tag seconds, the file written, last act ->
    job queued seconds: what the daemon spent before the upload could start)."""
    artifact = "bench/tmp-rename" if kind == "tmp" else "bench/in-place"
    name = f"x-{i}.safetensors" if kind == "tmp" else f"epoch-{i}.pt"
    dest = c.gdir / ("watch-w" if kind == "tmp" else "watch-z") / name
    before = len(remote_tags(c.remote, artifact + "@"))
    wall, last_act = run_writer(kind, body or c.body, dest)
    took = c.wait_tag(artifact, before) - last_act
    return took, dest, queued_at(c, artifact, dest, wall) - wall


def written_then_raw(c: Ctx, kind: str, i: int | str) -> float:
    """The raw baseline under the same conditions as the daemon's route: the same writer
    writes the same bytes (outside any watch), and boto3 uploads the file at once; seconds
    from the writer's last act to the end of the upload. Right after a writer the kernel
    is still flushing its GiB of dirty pages (measured: a raw upload then took 12.2 s,
    against 10.3 s on a calm machine), so a raw upload once the daemon is done would
    compare the daemon to an easier case. Both are reported."""
    name = f"raw-{i}.safetensors" if kind == "tmp" else f"raw-{i}.pt"
    dest = c.gdir / "staging" / name
    _, last_act = run_writer(kind, c.body, dest)
    c.s3.upload_file(str(dest), c.bucket, f"raw/{uuid.uuid4().hex}")
    took = time.monotonic() - last_act
    dest.unlink()
    return took


def queued_at(c: Ctx, artifact: str, path: Path, since: float) -> float:
    """The daemon's clock when it queued the job for ``path`` (its ``queued`` event)."""
    events = c.daemon.client().recent_events(since=since - 1, count=200)["events"]
    for e in events:
        data = e.get("data") or {}
        if e["type"] == "queued" and data.get("artifact") == artifact \
                and data.get("path") == str(path):  # fmt: skip
            return float(e["time"])
    raise RuntimeError(f"no queued event for {path}")


def renamed_in_route(c: Ctx, i: int) -> float:
    artifact = "bench/renamed-in"
    before = len(remote_tags(c.remote, artifact + "@"))
    dest = c.gdir / "watch-r" / f"ckpt-{i}.bin"
    t0 = time.monotonic()
    os.rename(c.body, dest)
    took = c.wait_tag(artifact, before) - t0
    c.after()
    os.rename(dest, c.body)
    return took - RENAMED_SETTLE


def md5_time(path: Path) -> float:
    t = time.perf_counter()
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(STEP):
            h.update(block)
    return time.perf_counter() - t


def transfer_group(b: Bench) -> None:
    size = 64 * MIB if b.plan.quick else 1024 * MIB
    gdir = b.dir("transfer")
    body = gdir / "staging" / "body.bin"
    body.parent.mkdir()
    write_random(body, size)
    with MotoServer() as moto:
        s3, bucket = moto.client(), moto.new_bucket()
        remote = make_bare_remote(gdir / "remote.git")
        daemon = Daemon(
            root=gdir / "d",
            watches=[
                Watch(gdir / "watch-w", "bench/tmp-rename", WRITER_SETTLE),
                Watch(gdir / "watch-z", "bench/in-place", WRITER_SETTLE),
                Watch(gdir / "watch-r", "bench/renamed-in", RENAMED_SETTLE),
            ],
            storage_url=f"s3://{bucket}/cpv",
            endpoint_url=moto.endpoint,
            remote=remote,
        )
        with daemon:
            c = Ctx(b, gdir, s3, bucket, body, size, daemon, remote)
            warm_up(c)
            measure(c)
    shutil.rmtree(gdir, ignore_errors=True)


def warm_up(c: Ctx) -> None:
    """Each artifact's first version (its one-time registration) and a full-size upload to
    the new server, none of them timed."""
    small = c.gdir / "staging" / "small.bin"
    write_random(small, 4096)
    for kind in ("tmp", "zip"):
        writer_route(c, kind, "warm", small)
    warm = c.gdir / "watch-r" / "warm.bin"
    shutil.copyfile(small, warm)
    wait_until(lambda: len(remote_tags(c.remote, "bench/renamed-in@")) >= 1, 120, "warm-up")
    c.raw(c.body)
    c.after()


def measure(c: Ctx) -> None:
    label = f"{c.size // MIB} MiB"
    fa = c.fig(f"(a) {label} safetensors written as .tmp in the watch, renamed: rename → tag")
    fb = c.fig(f"(b) {label} torch-style zip written in place, closed once: close → tag")
    qa = c.fig("(a) of which rename → job queued (the rest of the copy and md5, the compare)")
    qb = c.fig("(b) of which close → job queued (the rest of the copy and md5, the compare)")
    wa = c.fig("raw: the same writer writes (a)'s bytes, then boto3 upload_file at once: "
               "rename → uploaded")  # fmt: skip
    wb = c.fig("raw: the same writer writes (b)'s bytes, then boto3 upload_file at once: "
               "close → uploaded")  # fmt: skip
    fc = c.fig(f"(c) {label} renamed in from outside: rename → tag minus the quiet period",
               note=f"quiet period {RENAMED_SETTLE:g} s")  # fmt: skip
    ra = c.fig("raw boto3 upload_file of (a)'s file (default TransferConfig)")
    rb = c.fig("raw boto3 upload_file of (b)'s file (default TransferConfig)")
    md5 = c.fig("md5 of (c)'s file (hashlib, page cache warm)")
    rc = c.fig("raw boto3 upload_file of (c)'s file (default TransferConfig)")
    both = c.fig("md5 + raw upload of (c)'s file, one after the other")
    for i in range(c.b.plan.runs):
        for kind, fig, raw, queued, same in (("tmp", fa, ra, qa, wa), ("zip", fb, rb, qb, wb)):
            c.mutate()
            if i % 2:  # turns: the same-writer raw route before the daemon's, or after
                same.samples.append(written_then_raw(c, kind, i))
                empty_bucket(c.s3, c.bucket)
            took, path, to_queue = writer_route(c, kind, i)
            c.after()
            fig.samples.append(took)
            queued.samples.append(to_queue)
            if not i % 2:
                same.samples.append(written_then_raw(c, kind, i))
                empty_bucket(c.s3, c.bucket)
            raw.samples.append(c.raw(path))
            empty_bucket(c.s3, c.bucket)
            path.unlink()
            c.b.log(f"[transfer] {kind} run {i + 1}: {took:.2f} s (queued after "
                    f"{to_queue:.2f} s), raw {raw.samples[-1]:.2f} s, same writer then raw "
                    f"{same.samples[-1]:.2f} s")  # fmt: skip
        c.mutate()
        fc.samples.append(renamed_in_route(c, i))
        md5.samples.append(md5_time(c.body))
        rc.samples.append(c.raw(c.body))
        both.samples.append(md5.samples[-1] + rc.samples[-1])
        empty_bucket(c.s3, c.bucket)
        c.b.log(f"[transfer] renamed-in run {i + 1}: {fc.samples[-1]:.2f} s, md5+raw "
                f"{both.samples[-1]:.2f} s")  # fmt: skip
    r = c.b.results
    r.target(f"(a) {label} .tmp renamed in the watch / raw upload", ratio(fa, wa), "x",
             "<= 1.15x", "median rename → tag / median of the same writer's rename → raw "
             "upload done")  # fmt: skip
    r.target(f"(b) {label} zip written in place / raw upload", ratio(fb, wb), "x", "<= 1.15x",
             "median close → tag / median of the same writer's close → raw upload "
             "done")  # fmt: skip
    calm = "median raw upload of the same file once the daemon is done"
    r.target("(a) against a raw upload on a calm machine", ratio(fa, ra), "x", "",
             f"median rename → tag / {calm}")  # fmt: skip
    r.target("(b) against a raw upload on a calm machine", ratio(fb, rb), "x", "",
             f"median close → tag / {calm}")  # fmt: skip
    r.target(f"(c) {label} renamed in from outside / (md5 + raw upload)", ratio(fc, both), "x",
             "<= 1.05x",
             "median (rename → tag - quiet period) / median (md5 + raw upload)")  # fmt: skip
