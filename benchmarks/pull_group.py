"""Group ``pull`` (issue 18, target 4): ``cpvctl pull`` of a 1 GiB version against a raw
boto3 download of the same object from the same moto server, bytes verified.

The version is made once by the real daemon (rename-in, tag on the remote); then each run
times, in turns, the real ``cpvctl pull`` process (daemon reads the object, streams it over
its socket; cpvctl hashes, writes, fsyncs and renames) and the raw downloads in this
process: ``get_object`` streamed to a file, and ``download_file`` with one stream
(threshold above the size). boto3's default TransferConfig splits a download into ranged
GETs, each of which moto answers by reading the whole object again (FIELD-NOTES): one such
download of 1 GiB took 374 s here (load ~12), so it is not a route. Every output is
checked against the version's md5 (not timed) and deleted; ``sync`` runs between routes
so no route pays for another's dirty pages. A last raw route hashes and fsyncs as it
streams, in one thread, so the cost of cpvctl's promise (verified, durable bytes) is seen
apart from cpvctl itself; the CPU-seconds of each route (the process, and moto serving
it) say how much of the two cores a pull needs.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.procs import MIB, Daemon, MotoServer, Watch, make_bare_remote, remote_tags, run

if TYPE_CHECKING:
    from benchmarks.scenarios import Bench

SECTION = "12. Pull (issue 18)"
CPVCTL = "cpvctl pull (real process; md5 checked, fsync, rename)"
GET = "raw boto3: get_object streamed to a file"
ONE = "raw boto3: download_file, one stream (threshold above the size)"
FSYNC = "raw boto3: get_object streamed to a file, then fsync"
CHECKED = "raw boto3: get_object streamed, md5 checked, fsync (what cpvctl promises)"


def pull_group(b: Bench) -> None:
    from benchmarks.scenarios import md5_of, wait_until, write_random

    size = (32 if b.plan.quick else 1024) * MIB
    gdir = b.dir("pull")
    staging = gdir / "staging"
    staging.mkdir()
    src = staging / "ckpt.bin"
    write_random(src, size)
    md5 = md5_of([src])
    artifact = "bench/pull"
    with MotoServer() as moto:
        bucket = moto.new_bucket()
        remote = make_bare_remote(gdir / "remote.git")
        watch = gdir / "watch"
        d = Daemon(root=gdir / "d", watches=[Watch(watch, artifact)], remote=remote,
                   storage_url=f"s3://{bucket}/cpv", endpoint_url=moto.endpoint)  # fmt: skip
        with d:
            os.rename(src, watch / "ckpt.bin")
            wait_until(lambda: len(remote_tags(remote, artifact + "@")) >= 1, 900, "the version")
            b.log(f"[pull] {size // MIB} MiB version made")
            key = f"cpv/files/md5/{md5[:2]}/{md5[2:]}"
            routes = _routes(moto.client(), bucket, key, d, artifact)
            _measure(b, routes, gdir / "out", md5, size, moto.pid)
    shutil.rmtree(gdir, ignore_errors=True)


def _routes(s3: Any, bucket: str, key: str, d: Daemon, artifact: str) -> dict[str, Any]:
    import boto3.s3.transfer

    one = boto3.s3.transfer.TransferConfig(multipart_threshold=1 << 62)

    def get(dest: Path, sync: bool = False, check: bool = False) -> Path:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        md5 = hashlib.md5()
        with open(dest / "raw.bin", "wb") as f:
            while chunk := body.read(8 * MIB):
                f.write(chunk)
                if check:
                    md5.update(chunk)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        return dest / "raw.bin"

    def download(config: Any) -> Callable[[Path], Path]:
        def go(dest: Path) -> Path:
            s3.download_file(bucket, key, str(dest / "raw.bin"), Config=config)
            return dest / "raw.bin"

        return go

    def pull(dest: Path) -> Path:
        run([sys.executable, "-m", "cpvctl", "--socket", str(d.socket), "pull",
             f"{artifact}@v1.0.0", "-o", str(dest)])  # fmt: skip
        return dest / "ckpt.bin"

    return {
        CPVCTL: pull, GET: get, FSYNC: lambda p: get(p, sync=True), ONE: download(one),
        CHECKED: lambda p: get(p, sync=True, check=True),
    }  # fmt: skip


def _cpu(pid: int) -> float:
    """CPU-seconds of this process and its waited-for children, plus process ``pid``'s."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + server


def _measure(
    b: Bench, routes: dict[str, Any], out: Path, md5: str, size: int, moto_pid: int
) -> None:
    from benchmarks.scenarios import md5_of

    size_label = f"{size // MIB} MiB"
    figures = {label: b.results.figure(SECTION, label, "s") for label in routes}
    cpu = {label: b.results.figure(SECTION, f"CPU-seconds, this route and moto: {label}",
                                   "s") for label in routes}  # fmt: skip
    names = list(routes)
    for i in range(b.plan.runs):
        order = names[i % len(names):] + names[: i % len(names)]  # fmt: skip
        for label in order:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            os.sync()
            c0, t0 = _cpu(moto_pid), time.perf_counter()
            got = routes[label](out)
            figures[label].samples.append(time.perf_counter() - t0)
            cpu[label].samples.append(_cpu(moto_pid) - c0)
            if md5_of([got]) != md5:
                raise RuntimeError(f"{label}: wrong bytes in {got}")
            b.log(f"[pull] run {i}: {label}: {figures[label].samples[-1]:.2f} s")
    shutil.rmtree(out, ignore_errors=True)
    raw = min((figures[k] for k in (GET, ONE)), key=lambda f: f.median)
    b.results.target(
        f"pull of {size_label}: cpvctl pull / raw boto3 download (best config)",
        figures[CPVCTL].median / raw.median,
        "x",
        "<= 1.2x",
        f"median cpvctl pull / median of the faster of '{GET}' and '{ONE}' (boto3's ranged "
        "default is far slower on moto)",
    )
