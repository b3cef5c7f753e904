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

from benchmarks.gcbuild import GcShape, build_gc_registry, write_prefill
from benchmarks.procs import Daemon, MotoServer, run, status_kib

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

ARTIFACT = "bench/gc"
BUCKET = "cpv-bench-gc"
PREFIX = "gc"


PHASE_NOTES = {
    "registry": "tag index, kept versions, pointers (registry thread)",
    "manifests": "marker + GET of every kept .dir manifest, 8 in parallel",
    "list": "LIST of the 256 <2 hex>/ prefixes, 8 in parallel; moto renders each key slowly",
    "delete": "DeleteObjects, 1,000 keys per call",
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
            measure(b, section, d, shape)
    shutil.rmtree(gdir, ignore_errors=True)


def measure(b: Bench, section: str, d: Daemon, shape: GcShape) -> None:
    res = b.results
    cpvctl = [sys.executable, "-m", "cpvctl", "--socket", str(d.socket)]
    dry = res.figure(section, "cpvctl gc --dry-run (lists, reads kept manifests)", "s")
    wet = res.figure(section, f"cpvctl gc (deletes {shape.pruned_objects:,} objects)", "s")
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
