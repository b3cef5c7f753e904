"""Group ``burst`` (issues 5 and 18): checkpoints dropped at once, versions/s until the last
tag is on the remote, with and without a client polling ``cpvctl versions``.

The polling client is what a user watching a run does (``watch -n 0.2 cpvctl versions
NAME``): a real ``cpvctl`` process every 0.2 s, each waiting for the previous one. The two
kinds of run take turns on the same daemon (run ``i`` starts with the polled one when ``i``
is odd), so the machine's drift falls on both alike. The manual route (the real CLIs, one
version after another) is timed on a sample for scale.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from benchmarks.procs import (
    MIB,
    Daemon,
    MotoServer,
    Watch,
    cpu_seconds,
    empty_bucket,
    make_bare_remote,
    push_count,
    remote_tags,
    run,
)
from benchmarks.report import Figure
from benchmarks.scenarios import (
    Bench,
    manual_repo,
    manual_version,
    tags_reach,
    timed,
    tool,
    wait_until,
    write_random,
)

SECTION = "3. Burst"
POLL_INTERVAL = 0.2


def rate_label(n: int, polled: bool) -> str:
    """The label of the rate figure (``cli.add_targets`` finds the figures by it)."""
    if polled:
        return f"daemon, cpvctl versions polled every {POLL_INTERVAL:g} s: {n} x 1 MiB, versions/s"
    return f"daemon: {n} x 1 MiB dropped at once, versions/s"


class Poller:
    """``cpvctl versions NAME`` every ``interval`` s in a thread, as ``watch`` runs it: the
    next call starts ``interval`` after the previous one ended. Counts calls and failures."""

    def __init__(self, socket: Path, artifact: str, interval: float = POLL_INTERVAL) -> None:
        self.argv = [*tool("cpvctl"), "--socket", str(socket), "versions", artifact]
        self.interval = interval
        self.calls = 0
        self.failures = 0
        self.seconds = 0.0  # wall time spent in the calls
        self.cpu = 0.0  # CPU seconds of the cpvctl processes (the harness's reaped children)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpvctl-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            proc = subprocess.run(self.argv, capture_output=True, check=False, timeout=120)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.failures += proc.returncode != 0
            self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._cpu0 = _children_cpu()
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(130)
        self.cpu = _children_cpu() - self._cpu0


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children: only the pollers exit during a run
    (moto and the daemon are reaped when they stop)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class BurstFigures:
    """The figures of the group, registered in the order the report shows them."""

    def __init__(self, b: Bench) -> None:
        n, m, res = b.plan.burst_n, b.plan.manual_burst_n, b.results
        self.rate = {
            False: res.figure(SECTION, rate_label(n, False), "versions/s",
                              note="until the last tag is on the remote"),
            True: res.figure(SECTION, rate_label(n, True), "versions/s",
                             note="a real cpvctl process per poll, as `watch -n 0.2` runs it"),
        }  # fmt: skip
        self.wall = res.figure(SECTION, f"daemon: time until the {n}th tag is on the remote", "s")
        self.pushes = res.figure(
            SECTION, f"daemon: git pushes for {n} versions", "pushes",
            note="counted by the remote's post-receive hook",
        )  # fmt: skip
        self.cpu = {
            p: res.figure(SECTION, f"daemon CPU per version{', polled' if p else ''}", "ms",
                          note="utime+stime of the daemon's tree (git included) / versions")
            for p in (False, True)
        }  # fmt: skip
        self.polls = res.figure(SECTION, "cpvctl versions calls during a polled burst", "calls")
        self.poll_time = res.figure(SECTION, "cpvctl versions: wall time per call, polled", "s")
        self.poll_cpu = res.figure(
            SECTION, "cpvctl versions: CPU of the polling processes per call", "ms",
            note="the client's own cost, on the same 2 cores as the daemon",
        )  # fmt: skip
        self.manual = res.figure(
            SECTION, f"manual route: {m} x 1 MiB one after another, versions/s", "versions/s",
            note=f"{m} versions timed, the rate extrapolated to {n}",
        )  # fmt: skip


def burst_group(b: Bench) -> None:
    plan, gdir = b.plan, b.dir("burst")
    figs = BurstFigures(b)
    with MotoServer() as moto:
        s3, bucket = moto.client(), moto.new_bucket()
        artifact = "bench/burst"
        remote = make_bare_remote(gdir / "remote.git")
        daemon = Daemon(
            root=gdir / "d",
            watches=[Watch(gdir / "watch", artifact, plan.settle)],
            storage_url=f"s3://{bucket}/cpv",
            endpoint_url=moto.endpoint,
            remote=remote,
        )
        staging = gdir / "staging"
        staging.mkdir()
        with daemon:
            write_random(staging / "warmup.bin", 4096)
            os.rename(staging / "warmup.bin", gdir / "watch" / "warmup.bin")
            wait_until(lambda: len(remote_tags(remote, artifact + "@")) >= 1, 120, "warm-up")
            for r in range(plan.runs):
                for polled in (False, True) if r % 2 == 0 else (True, False):
                    _daemon_run(b, figs, daemon, remote, staging, f"r{r}{'p' * polled}", polled)
                    empty_bucket(s3, bucket)
        b.results.notes.append(
            f"burst: each of the {plan.burst_n} versions per run was checked to be its own "
            "commit on the remote (rev-list count before/after)."
        )
        _manual_runs(b, figs.manual, gdir, s3, bucket, moto.endpoint)
    shutil.rmtree(gdir, ignore_errors=True)


def _daemon_run(
    b: Bench, figs: BurstFigures, daemon: Daemon, remote: Path, staging: Path, tag: str,
    polled: bool,
) -> None:  # fmt: skip
    """Drop ``burst_n`` checkpoints at once; record the rate until the last tag is pushed."""
    n, artifact = b.plan.burst_n, daemon.watches[0].artifact
    watch, batch = daemon.watches[0].path, staging / tag
    batch.mkdir()
    names = [f"ck-{tag}-{j:03d}.bin" for j in range(n)]
    for nm in names:
        write_random(batch / nm, MIB)
    before = len(remote_tags(remote, artifact + "@"))
    commits_before = _commits(remote)
    pushes_before = push_count(remote)
    poller = Poller(daemon.socket, artifact)
    cpu0 = cpu_seconds(daemon.pid)
    with poller if polled else contextlib.nullcontext():
        t0 = time.perf_counter()
        for nm in names:
            os.rename(batch / nm, watch / nm)
        wait_until(tags_reach(remote, artifact + "@", before + n), 900, f"{n} tags", interval=0.02)
        elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(daemon.pid) - cpu0
    figs.rate[polled].samples.append(n / elapsed)
    figs.cpu[polled].samples.append(cpu / n * 1000)
    if not polled:
        figs.wall.samples.append(elapsed)
        figs.pushes.samples.append(push_count(remote) - pushes_before)
    else:
        figs.polls.samples.append(poller.calls)
        figs.poll_time.samples.append(poller.seconds / max(poller.calls, 1))
        figs.poll_cpu.samples.append(poller.cpu / max(poller.calls, 1) * 1000)
        if poller.failures:
            b.results.notes.append(f"burst {tag}: {poller.failures} cpvctl versions calls failed")
    made = _commits(remote) - commits_before
    b.log(
        f"[burst] {tag}{' polled' if polled else ''}: {elapsed:.2f} s, {n / elapsed:.1f}/s, "
        f"{made} commits, {push_count(remote) - pushes_before} pushes, "
        f"{cpu / n * 1000:.0f} ms CPU/version"
        + (f", {poller.calls} polls" if polled else "")
    )
    if made != n:
        b.results.notes.append(f"burst {tag}: {made} commits for {n} tags (expected {n})")
    wait_until(
        lambda: daemon.client().status()["queue"]["depth"] == 0, 300, "an empty queue", 0.1
    )


def _commits(remote: Path) -> int:
    return int(run(["git", "rev-list", "--count", "main"], cwd=remote).stdout)


def _manual_runs(
    b: Bench, fig: Figure, gdir: Path, s3: object, bucket: str, endpoint: str
) -> None:
    """The manual route on a sample of the burst: the real CLIs, one version at a time."""
    m = b.plan.manual_burst_n
    repo = manual_repo(
        gdir / "manual", make_bare_remote(gdir / "manual.git"), f"s3://{bucket}/manual", endpoint
    )
    k = 0
    for r in range(b.plan.runs):
        batch = gdir / "staging" / f"m{r}"
        batch.mkdir()
        for j in range(m):
            write_random(batch / f"{j}.bin", MIB)
        steps: dict[str, float] = {}

        def route(batch: Path = batch, steps: dict[str, float] = steps) -> None:
            nonlocal k
            for j in range(m):
                os.replace(batch / f"{j}.bin", repo / "model.bin")
                manual_version(repo, "model.bin", f"bench/burst@v1.{k}.0", steps)
                k += 1

        elapsed = timed(route)
        fig.samples.append(m / elapsed)
        b.log(f"[burst] manual run {r + 1}: {m} versions in {elapsed:.2f} s")
        empty_bucket(s3, bucket)
