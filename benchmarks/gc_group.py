"""Group 7: ``cpvctl gc`` on a registry of 10,000 versions and 100,000 objects on moto S3.

Issue 13's target: under 60 s and under 200 MiB peak RSS. The registry and the bucket are
synthetic (benchmarks.gcbuild); 90 % of the versions are deregistered, so gc lists
100,000 objects, reads the 1,000 kept manifests and deletes the other 90,000 objects. The
daemon is the real ``cpvd`` process; time is the real ``cpvctl gc`` process's wall time,
memory the daemon's ``VmHWM`` (its peak RSS since it started) after the gc.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.gc_baseline import THREADS, one_walk, prefix_parallel
from benchmarks.gcbuild import GcShape, build_gc_registry, write_prefill
from benchmarks.procs import Daemon, MotoServer, run, status_kib

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

ARTIFACT = "bench/gc"
BUCKET = "cpv-bench-gc"
PREFIX = "gc"


WET = "cpvctl gc"
BASE_ONE = "raw boto3: one paginated ListObjectsV2 over files/md5/"
BASE_PAR = f"raw boto3: the 256 <2 hex>/ prefixes, {THREADS} threads"

PHASE_NOTES = {
    "registry": "tag index, kept versions, pointers (registry thread)",
    "manifests": "marker + GET of every kept .dir manifest, 8 in parallel",
    "list": "LIST of the 16 shards 0-f, 8 in parallel (LastModified parsed fast)",
    "delete": "DeleteObjects, 1,000 keys per call, 4 in flight",
}


@dataclass
class GcDaemon(Daemon):
    """The benchmark daemon with ``[retention] grace_hours = 0``: every object is old."""

    def write_config(self) -> None:
        super().write_config()
        with open(self.config_path, "a") as f:
            f.write("[retention]\ngrace_hours = 0\n")


def gc_shape(quick: bool) -> GcShape:
    return GcShape(versions=500 if quick else 10_000, files=9, keep_every=10)


def gc_group(b: Bench) -> None:
    shape = gc_shape(b.plan.quick)
    gdir = b.dir("gc")
    section = f"7. Garbage collection ({shape.versions:,} versions, {shape.objects:,} objects)"
    res = b.results
    build = res.figure(section, "building registry and bucket (fast-import, moto backend)", "s",
                       note="setup, not a target")  # fmt: skip
    t0 = time.perf_counter()
    url = f"s3://{BUCKET}/{PREFIX}"
    write_prefill(gdir / "prefill.tsv", BUCKET, PREFIX, ARTIFACT, shape)
    with MotoServer(prefill=gdir / "prefill.tsv") as moto:
        # the registry records its storage, endpoint included (cpvd.registry.binding)
        build_gc_registry(gdir / "registry", ARTIFACT, shape, url, moto.endpoint)
        build.samples.append(time.perf_counter() - t0)
        d = GcDaemon(root=gdir / "d", watches=[], storage_url=url, endpoint_url=moto.endpoint,
                     registry_path=gdir / "registry")  # fmt: skip
        with d:
            baselines(b, section, moto, shape)
            measure(b, section, d, shape)
    shutil.rmtree(gdir, ignore_errors=True)


def baselines(b: Bench, section: str, moto: MotoServer, shape: GcShape) -> None:
    """Raw boto3 listings of the same bucket (benchmarks.gc_baseline), before the gcs."""
    s3, base = moto.client(), f"{PREFIX}/files/md5/"
    for label, walk in (
        (BASE_ONE, one_walk),
        (BASE_PAR, prefix_parallel),
    ):
        listed, seconds = walk(s3, BUCKET, base)
        if listed != shape.objects:
            raise RuntimeError(f"{label}: listed {listed}, expected {shape.objects}")
        b.results.figure(
            section, label, "s", note="harness process, boto3 defaults"
        ).samples.append(seconds)
        b.log(f"[gc] {label}: {seconds:.1f} s")


def ratios(b: Bench, section: str) -> None:
    """gc's list phase and whole run against the fastest raw listing of this run."""
    res = b.results
    raw = [f for f in (res.find(section, BASE_ONE), res.find(section, BASE_PAR)) if f]
    listing, wet = res.find(section, "gc phase: list"), res.find(section, WET)
    if not raw or listing is None or wet is None:
        return
    fastest = min(f.median for f in raw)
    for label, fig in (("gc list phase", listing), ("cpvctl gc, whole", wet)):
        res.figure(section, f"{label} / fastest raw listing", "x",
                   note="same bucket, same run").samples.append(fig.median / fastest)  # fmt: skip


def measure(b: Bench, section: str, d: Daemon, shape: GcShape) -> None:
    res = b.results
    cpvctl = [sys.executable, "-m", "cpvctl", "--socket", str(d.socket)]
    dry = res.figure(section, "cpvctl gc --dry-run (lists, reads kept manifests)", "s")
    wet = res.figure(section, WET, "s", note=f"deletes {shape.pruned_objects:,} objects")
    base = res.figure(section, "daemon RSS before gc", "MiB")
    peak = res.figure(section, "daemon peak RSS (VmHWM) after both gcs", "MiB")
    base.samples.append(status_kib(d.pid, "VmRSS") / 1024)
    t = time.perf_counter()
    report = json.loads(run([*cpvctl, "--json", "gc", "--dry-run"], timeout=900).stdout)
    dry.samples.append(time.perf_counter() - t)
    _check(report, shape, dry_run=True)
    t = time.perf_counter()
    report = json.loads(run([*cpvctl, "--json", "gc"], timeout=900).stdout)
    wet.samples.append(time.perf_counter() - t)
    _check(report, shape, dry_run=False)
    for name, seconds in report["phase_seconds"].items():
        res.figure(
            section, f"gc phase: {name}", "s", note=PHASE_NOTES.get(name, "")
        ).samples.append(float(seconds))
    peak.samples.append(status_kib(d.pid, "VmHWM") / 1024)
    ratios(b, section)
    size = f"{shape.versions:,} versions / {shape.objects:,} objects"
    res.target(f"gc of {size}: time", wet.median, "s", "< 60 s",
               basis="one real `cpvctl gc` process, wall time")  # fmt: skip
    res.target(f"gc of {size}: daemon peak RSS", peak.median, "MiB",
               "< 200 MiB", basis="VmHWM of the cpvd process after the gc")  # fmt: skip
    b.log(f"[gc] dry run {dry.median:.1f} s, gc {wet.median:.1f} s, peak {peak.median:.0f} MiB")


def _check(report: dict[str, Any], shape: GcShape, dry_run: bool) -> None:
    want = (shape.objects, shape.pruned_objects, 0 if dry_run else shape.pruned_objects)
    got = (report["objects_listed"], report["objects_to_delete"], report["objects_deleted"])
    if got != want:
        raise RuntimeError(f"gc report {got} (listed, to delete, deleted), expected {want}")
