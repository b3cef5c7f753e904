"""Group ``fleet`` (issue 18): several daemons ("machines") on one Git remote and one bucket.

Each daemon has its own state dir, clone and artifact (``fleet/mI``), all on one bare remote
and one moto bucket under one ``storage_url`` (the registry records its storage, so machines
sharing a registry share it). A fleet of ``k`` daemons is started, each makes a warm-up
version (not timed), then every daemon gets ``per`` checkpoints of 1 MiB renamed in at
once. Measured: the aggregate rate until the last tag is on the remote, each checkpoint's
time from its rename to its tag on the remote (median, p95), the pushes the remote took and
the pushes it rejected (another machine got there first: fetch, replay, push again). The
same for fleets of 1, 3 and 10, so the share of the remote in the cost shows as ``k`` grows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import (
    MIB,
    Daemon,
    MotoServer,
    Watch,
    empty_bucket,
    make_bare_remote,
    push_count,
    remote_tags,
)
from benchmarks.report import Figure
from benchmarks.scenarios import Bench, wait_until, write_random

SECTION = "11. Fleet"
REJECTED = "push rejected, replaying"


@dataclass
class FleetFigures:
    rate: Figure
    p50: Figure
    p95: Figure
    pushes: Figure
    rejected: Figure


def _figures(b: Bench, k: int, per: int) -> FleetFigures:
    res, what = b.results, f"{k} daemon{'s' if k > 1 else ''} x {per} x 1 MiB"
    return FleetFigures(
        rate=res.figure(SECTION, f"{what}: aggregate versions/s", "versions/s",
                        note="all dropped at once; until the last tag is on the remote"),
        p50=res.figure(SECTION, f"{what}: drop-to-tag latency, median", "s"),
        p95=res.figure(SECTION, f"{what}: drop-to-tag latency, p95", "s",
                       note="rename into the watch -> tag in the bare remote's refs"),
        pushes=res.figure(SECTION, f"{what}: pushes the remote accepted", "pushes"),
        rejected=res.figure(SECTION, f"{what}: pushes rejected (fetch, replay, retry)", "pushes",
                            note="'push rejected' lines in the daemons' logs"),
    )  # fmt: skip


def fleet_group(b: Bench) -> None:
    sizes, per = ((1, 3), 5) if b.plan.quick else ((1, 3, 10), 20)
    figs = {k: _figures(b, k, per) for k in sizes}
    with MotoServer() as moto:
        bucket = moto.new_bucket()
        for r in range(b.plan.runs):
            for k in sizes:
                _fleet_run(b, figs[k], moto, bucket, k, per, b.dir(f"fleet/r{r}k{k}"))
                empty_bucket(moto.client(), bucket)
    shutil.rmtree(b.root / "fleet", ignore_errors=True)


def _fleet_run(
    b: Bench, figs: FleetFigures, moto: MotoServer, bucket: str, k: int, per: int, gdir: Path
) -> None:
    remote = make_bare_remote(gdir / "remote.git")
    daemons = [
        Daemon(
            root=gdir / f"d{i}",
            watches=[Watch(gdir / f"w{i}", f"fleet/m{i}", b.plan.settle)],
            storage_url=f"s3://{bucket}/cpv",
            endpoint_url=moto.endpoint,
            remote=remote,
        )
        for i in range(k)
    ]
    staging = gdir / "staging"
    staging.mkdir()
    with contextlib.ExitStack() as stack:
        for i, d in enumerate(daemons):  # the first makes the registry, the others clone it
            stack.enter_context(d)
            _warm_up(d, staging, remote, i)
        drops = _prepare(daemons, staging, per)
        pushes0, rejected0 = push_count(remote), _rejected(daemons)
        seen, elapsed = _drop_and_watch(drops, remote, per)
        lat = sorted(seen[tag] - t for tag, (_, _, t) in drops.items())
        figs.rate.samples.append(len(drops) / elapsed)
        figs.p50.samples.append(lat[len(lat) // 2])
        figs.p95.samples.append(lat[min(len(lat) - 1, int(0.95 * len(lat)))])
        figs.pushes.samples.append(push_count(remote) - pushes0)
        figs.rejected.samples.append(_rejected(daemons) - rejected0)
        b.log(
            f"[fleet] {k} daemons: {len(drops) / elapsed:.1f}/s, p50 {figs.p50.samples[-1]:.2f} s,"
            f" p95 {figs.p95.samples[-1]:.2f} s, {figs.pushes.samples[-1]:.0f} pushes, "
            f"{figs.rejected.samples[-1]:.0f} rejected"
        )
    shutil.rmtree(gdir, ignore_errors=True)


def _warm_up(d: Daemon, staging: Path, remote: Path, i: int) -> None:
    artifact = d.watches[0].artifact
    write_random(staging / f"warm{i}.bin", 4096)
    os.rename(staging / f"warm{i}.bin", d.watches[0].path / "warm.bin")
    wait_until(lambda: len(remote_tags(remote, artifact + "@")) >= 1, 300, f"{artifact} warm-up")


def _prepare(daemons: list[Daemon], staging: Path, per: int) -> dict[str, tuple[Path, Path, float]]:
    """Tag expected on the remote -> (file in staging, its place in the watch, drop time)."""
    out: dict[str, tuple[Path, Path, float]] = {}
    for d in daemons:
        w = d.watches[0]
        for j in range(per):
            src = staging / f"{w.artifact.replace('/', '-')}-{j:03d}.bin"
            write_random(src, MIB)
            # one artifact per daemon: its versions after the warm-up's v1.0.0 come in order
            out[f"{w.artifact}@v1.{j + 1}.0"] = (src, w.path / src.name, 0.0)
    return out


def _drop_and_watch(
    drops: dict[str, tuple[Path, Path, float]], remote: Path, per: int
) -> tuple[dict[str, float], float]:
    """Rename every checkpoint in, then poll the remote's refs every 20 ms; the time each
    expected tag was first seen, and the time until the last."""
    t0 = time.perf_counter()
    for tag, (src, dest, _) in list(drops.items()):
        os.rename(src, dest)
        drops[tag] = (src, dest, time.perf_counter())
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 900
    while len(seen) < len(drops):
        if time.monotonic() > deadline:
            raise TimeoutError(f"fleet: {len(seen)} of {len(drops)} tags after 900 s")
        now = time.perf_counter()
        for tag in remote_tags(remote, "fleet/") & drops.keys() - seen.keys():
            seen[tag] = now
        time.sleep(0.02)
    return seen, max(seen.values()) - t0


def _rejected(daemons: list[Daemon]) -> int:
    total = 0
    for d in daemons:
        with contextlib.suppress(FileNotFoundError):
            total += d.log_path.read_text(errors="replace").count(REJECTED)
    return total
