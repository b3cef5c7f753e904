"""The measurements of issue 5, one function per group, sharing one ``Bench`` context.

Each group starts what it needs (a moto server in a child process, a bare Git remote, the
real daemon) and stops it before the next group, so moto's memory (it holds objects in RAM)
never piles up across groups; objects are also deleted after every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import (
    MIB,
    Daemon,
    MotoServer,
    RssSampler,
    Watch,
    cpu_seconds,
    empty_bucket,
    ls_remote_tags,
    make_bare_remote,
    remote_tags,
    rss_bytes,
    run,
    status_kib,
    tree_pss_bytes,
)
from benchmarks.querybuild import build_query_registry
from benchmarks.report import Figure, Results
from cpvd.config.model import DEFAULT_SETTLE_SECONDS

CHUNK = 8 * MIB


@dataclass(frozen=True)
class Case:
    """One end-to-end checkpoint shape."""

    name: str
    size: int  # total bytes
    shards: int = 0  # 0: a single file; N: a directory of N equal files

    @property
    def label(self) -> str:
        gib = 1024 * MIB
        size = f"{self.size // MIB} MiB" if self.size < gib else f"{self.size // gib} GiB"
        return f"{size} directory of {self.shards} shards" if self.shards else f"{size} file"


@dataclass
class Plan:
    runs: int
    quick: bool
    cases: list[Case]
    burst_n: int
    manual_burst_n: int
    idle_seconds: float
    idle_watches: int
    query_versions: int
    query_reps: int
    version_reps: int
    settle: float = 0.2
    #: the second daemon of each end-to-end group: what a user gets out of the box
    default_settle: float = DEFAULT_SETTLE_SECONDS
    gto_repeat_below: float = 60.0  # repeat `gto show` only when one run is quicker than this
    gto_timeout: float = 300.0  # at 10,000 versions gto show runs for many minutes
    #: (label, part size MiB, threads); None = boto3's default TransferConfig
    transfer_configs: list[tuple[str, int | None, int | None]] = field(
        default_factory=lambda: [
            ("default TransferConfig (8 MiB parts, 10 threads)", None, None),
            ("16 MiB parts, 8 threads", 16, 8),
            ("32 MiB parts, 4 threads", 32, 4),
            ("64 MiB parts, 8 threads", 64, 8),
        ]
    )

    @classmethod
    def full(cls, runs: int) -> Plan:
        return cls(
            runs=runs,
            quick=False,
            cases=[
                Case("f256m", 256 * MIB),
                Case("f1g", 1024 * MIB),
                Case("d1g", 1024 * MIB, shards=8),
            ],
            burst_n=200,
            manual_burst_n=20,
            idle_seconds=60.0,
            idle_watches=5,
            query_versions=10_000,
            query_reps=5,
            version_reps=10,
        )

    @classmethod
    def smoke(cls, runs: int = 1) -> Plan:
        return cls(
            runs=runs,
            quick=True,
            cases=[Case("f256m", 8 * MIB), Case("f1g", 32 * MIB), Case("d1g", 32 * MIB, shards=8)],
            burst_n=20,
            manual_burst_n=3,
            idle_seconds=20.0,
            idle_watches=5,
            query_versions=500,
            query_reps=2,
            version_reps=3,
            transfer_configs=[
                ("default TransferConfig (8 MiB parts, 10 threads)", None, None),
                ("16 MiB parts, 8 threads", 16, 8),
            ],
        )


def tool(name: str) -> list[str]:
    """The console script next to this interpreter (the venv's), else ``python -m``."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", name]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.005
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tags_reach(remote: Path, prefix: str, want: int) -> Callable[[], bool]:
    """A predicate: the remote holds at least ``want`` tags starting with ``prefix``."""
    return lambda: len(remote_tags(remote, prefix)) >= want


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n


def md5_of(paths: Sequence[Path]) -> str:
    h = hashlib.md5()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
    return h.hexdigest()


class Source:
    """A checkpoint parked in a staging directory on the watch root's filesystem.

    Made once; before each run its first bytes are rewritten so its content (and md5) is
    new, then it is renamed into place and renamed back afterwards. The bytes are in the
    page cache, as a checkpoint a trainer has just written is.
    """

    def __init__(self, staging: Path, case: Case) -> None:
        self.case = case
        staging.mkdir(parents=True, exist_ok=True)
        self.home = staging / ("ckpt" if case.shards else "ckpt.bin")

    def create(self) -> None:
        if self.case.shards:
            self.home.mkdir()
            per = self.case.size // self.case.shards
            for i in range(self.case.shards):
                write_random(self.home / f"shard-{i:02d}.bin", per)
        else:
            write_random(self.home, self.case.size)

    def files(self, root: Path | None = None) -> list[Path]:
        base = root or self.home
        return sorted(base.iterdir()) if self.case.shards else [base]

    def mutate(self) -> None:
        with open(self.files()[0], "r+b") as f:
            f.write(uuid.uuid4().bytes)

    def place(self, dest: Path) -> Path:
        os.rename(self.home, dest)
        return dest

    def take_back(self, dest: Path) -> None:
        os.rename(dest, self.home)


@dataclass
class Bench:
    plan: Plan
    root: Path
    results: Results
    log: Callable[[str], None]

    def dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d


# --- 1, 2 and 6: end to end, baselines, memory -----------------------------------------------


#: the order of the routes (daemon, raw, daemon at the default quiet period, manual) in
#: run i: each goes first once in four runs and no route always follows the same one (a
#: plain rotation put the default-quiet daemon right after the raw uploads in 2 runs of 3)
TURNS: tuple[tuple[int, int, int, int], ...] = (
    (0, 1, 2, 3),
    (2, 0, 3, 1),
    (3, 2, 1, 0),
    (1, 3, 0, 2),
)


def e2e_group(b: Bench, case: Case) -> None:
    """The daemon, the raw boto3 upload and the manual DVC route on the same bytes and server.

    The routes take turns: run ``i`` measures each of them once, back to back, in the order
    ``TURNS[i]``. moto's speed can drift within one server's life (its
    first uploads were slower in one test) and the shared machine's load drifts too, so
    measuring one route's runs all before the other's put the drift into the ratios; taking
    turns spreads it over all routes alike. A full-size upload (not timed) warms moto first.
    """
    gdir = b.dir(case.name)
    src = Source(gdir / "staging", case)
    b.log(f"[{case.label}] writing the checkpoint")
    src.create()
    with MotoServer() as moto:
        s3 = moto.client()
        bucket = moto.new_bucket()
        ctx = RouteContext(b, case, gdir, src, moto, s3, bucket)
        ctx.warm_up()
        raw = RawRoute(ctx)
        manual = ManualRoute(ctx)
        with DaemonRoute(ctx) as daemon, DaemonRoute(ctx, default_settle=True) as default:
            routes: list[Route] = [daemon, raw, default, manual]
            for i in range(b.plan.runs):
                for route in (routes[k] for k in TURNS[i % len(TURNS)]):
                    src.mutate()
                    route.run(i)
                    ctx.after_run()
        raw.finish()
        b.results.notes.append(
            f"{case.label}: moto server RSS peaked at {ctx.peak_moto / MIB:.0f} MiB (sampled "
            "after each run; objects deleted after every run, server restarted per group)."
        )
    shutil.rmtree(gdir, ignore_errors=True)


@dataclass
class RouteContext:
    """What the routes of one end-to-end group share: the bytes, the server, the bucket."""

    b: Bench
    case: Case
    gdir: Path
    src: Source
    moto: MotoServer
    s3: Any
    bucket: str
    peak_moto: int = 0

    @property
    def section(self) -> str:
        return f"2. Baselines: {self.case.label}"

    def warm_up(self) -> None:
        """One full-size upload, not timed: a new moto server's first uploads can be slower."""
        for f in self.src.files():
            self.s3.upload_file(str(f), self.bucket, f"warm-up/{f.name}")
        empty_bucket(self.s3, self.bucket)

    def after_run(self) -> None:
        self.peak_moto = max(self.peak_moto, self.moto.rss())
        empty_bucket(self.s3, self.bucket)


class Route:
    """One way of getting the checkpoint stored; ``run(i)`` measures it once."""

    def run(self, i: int) -> None:
        raise NotImplementedError


class DaemonRoute(Route):
    """The real daemon: rename the checkpoint in, wait for its tag on the remote.

    ``default_settle``: a second daemon whose quiet period is cpvd's default, for the
    figure a user gets (the hash runs during the quiet period); its memory is not sampled.
    """

    def __init__(self, ctx: RouteContext, default_settle: bool = False) -> None:
        self.ctx = ctx
        b, case = ctx.b, ctx.case
        plan = b.plan
        self.settle = plan.default_settle if default_settle else plan.settle
        section = f"1. End to end: {case.label}"
        who = "daemon"
        if default_settle:
            who = f"daemon, quiet period {self.settle:g} s (cpvd's default)"
        self.e2e = b.results.figure(
            section,
            f"{who}: rename-in → tag on the remote",
            "s",
            note=f"includes the quiet period ({self.settle:g} s)",
        )
        self.net = b.results.figure(section, f"{who}: same, minus the quiet period", "s")

        def memory(label: str, note: str) -> Figure:
            # the default-quiet daemon's memory is sampled but not reported
            if default_settle:
                return Figure("6. Memory", label, "MiB")
            return b.results.figure("6. Memory", label, "MiB", note=note)

        self.growth = memory(
            f"daemon RSS growth while versioning the {case.label}",
            "peak VmRSS of the daemon (sampled every 50 ms) minus its VmRSS just before the rename",
        )
        self.hwm = memory(
            f"daemon VmHWM growth, {case.label}",
            "the kernel's exact high-water mark, after minus before (0 when the run stayed "
            "under an earlier peak)",
        )
        self.tree = memory(
            f"daemon process-tree PSS growth, {case.label}",
            "daemon + children (git), proportional set size, peak minus before",
        )
        tail = "-default" if default_settle else ""
        self.artifact = f"bench/{case.name}{tail}"
        self.watch = ctx.gdir / f"watch{tail}"
        self.remote = make_bare_remote(ctx.gdir / f"remote{tail}.git")
        self.daemon = Daemon(
            root=ctx.gdir / ("d2" if default_settle else "d"),
            watches=[Watch(self.watch, self.artifact, self.settle)],
            storage_url=f"s3://{ctx.bucket}/cpv{tail}",
            endpoint_url=ctx.moto.endpoint,
            remote=self.remote,
        )

    def __enter__(self) -> DaemonRoute:
        self.daemon.__enter__()
        # warm-up: the artifact's first version also commits its dvc.yaml entry
        warm = self.ctx.gdir / "staging" / "warmup.bin"
        write_random(warm, 4096)
        os.rename(warm, self.watch / "warmup.bin")
        wait_until(
            lambda: len(remote_tags(self.remote, self.artifact + "@")) >= 1,
            120,
            "the warm-up version",
        )
        self.ctx.b.log(f"[{self.ctx.case.label}] daemon ready, warm-up versioned")
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.__exit__(*exc)

    def run(self, i: int) -> None:
        ctx, daemon, remote = self.ctx, self.daemon, self.remote
        prefix = self.artifact + "@"
        before = remote_tags(remote, prefix)
        base_main = rss_bytes(daemon.pid)
        base_tree = tree_pss_bytes(daemon.pid)
        base_hwm = status_kib(daemon.pid, "VmHWM") * 1024
        dest = self.watch / (f"{ctx.case.name}-r{i}" + ("" if ctx.case.shards else ".bin"))
        with RssSampler(daemon.pid) as sampler:
            t0 = time.perf_counter()
            ctx.src.place(dest)
            wait_until(
                tags_reach(remote, prefix, len(before) + 1),
                900,
                f"the tag of {dest.name} on the remote",
            )
            elapsed = time.perf_counter() - t0
        new = remote_tags(remote, prefix) - before
        if not new <= ls_remote_tags(remote):
            raise RuntimeError(f"git ls-remote does not list {new}")
        self.e2e.samples.append(elapsed)
        self.net.samples.append(elapsed - self.settle)
        self.growth.samples.append((sampler.peak_main - base_main) / MIB)
        self.tree.samples.append((sampler.peak_tree - base_tree) / MIB)
        self.hwm.samples.append((status_kib(daemon.pid, "VmHWM") * 1024 - base_hwm) / MIB)
        ctx.b.log(
            f"[{ctx.case.label}] daemon (quiet {self.settle:g} s) run {i + 1}: {elapsed:.2f} s, "
            f"{sorted(new)}, "
            f"RSS +{(sampler.peak_main - base_main) / MIB:.0f} MiB ({sampler.samples} samples)"
        )
        wait_until(
            lambda: daemon.client().status()["queue"]["depth"] == 0,
            120,
            "an empty queue",
            interval=0.1,
        )
        ctx.src.take_back(dest)
        time.sleep(1.0)


def _copy_all(pairs: list[tuple[Path, Path]]) -> None:
    for f, c in pairs:
        shutil.copyfile(f, c)


UNSIGNED_LABEL = "raw boto3 upload_file, 8 MiB parts, 10 threads, unsigned payload (cpvd's client)"
PARTS_LABEL = "raw multipart upload by hand (cpvd's client settings): the parts"
COMPLETE_LABEL = "raw multipart upload by hand: CompleteMultipartUpload"


def multipart_split(
    s3: Any, bucket: str, prefix: str, files: Sequence[Path]
) -> tuple[float, float]:
    """Upload ``files`` as boto3 does (8 MiB parts, 10 threads) and time the two halves.

    Returns (seconds sending the parts, seconds in CompleteMultipartUpload), summed over the
    files. moto assembles the object only on CompleteMultipartUpload, in one thread; real S3
    answers it in well under a second. So this shows how much of a raw upload to this server
    is transfer that hashing could overlap with, and how much is the server's own work after
    the last byte.
    """
    sending = completing = 0.0
    for path in files:
        sent, completed = _multipart_upload(s3, bucket, f"{prefix}/{path.name}", path)
        sending, completing = sending + sent, completing + completed
    return sending, completing


def _multipart_upload(s3: Any, bucket: str, key: str, path: Path) -> tuple[float, float]:
    started = time.perf_counter()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    with open(path, "rb") as f:

        def put(n: int) -> dict[str, Any]:
            body = os.pread(f.fileno(), CHUNK, n * CHUNK)
            r = s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n + 1, Body=body
            )
            return {"PartNumber": n + 1, "ETag": r["ETag"]}

        with ThreadPoolExecutor(10) as pool:
            parts = list(pool.map(put, range(max(1, -(-path.stat().st_size // CHUNK)))))
    sent = time.perf_counter()
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    return sent - started, time.perf_counter() - sent


FRESH_LABEL = "raw upload of a copy made just before (cpvd's client settings)"


class RawRoute(Route):
    """md5 and a raw boto3 ``upload_file`` of the same bytes, in every TransferConfig."""

    def __init__(self, ctx: RouteContext) -> None:
        from boto3.s3.transfer import TransferConfig

        self.ctx = ctx
        b, section = ctx.b, ctx.section
        self.md5 = b.results.figure(section, "md5 (hashlib, page cache warm)", "s")
        self.copy = b.results.figure(
            section,
            "copy to a new file (shutil.copyfile: what a snapshot costs without reflink)",
            "s",
            note="new page-cache pages; the daemon copies while it hashes",
        )
        self.uploads: list[tuple[Figure, Any]] = []
        for label, part, threads in b.plan.transfer_configs:
            cfg = (
                TransferConfig()
                if part is None
                else TransferConfig(
                    multipart_chunksize=part * MIB,
                    multipart_threshold=8 * MIB,
                    max_concurrency=threads or 10,
                )
            )
            fig = b.results.figure(section, f"raw boto3 upload_file, {label}", "s")
            self.uploads.append((fig, cfg))
        # cpvd's client turns SigV4 payload signing off on plain-http endpoints (boto3
        # already does over https): the same upload with that client setting, reported beside
        # the best TransferConfig rather than competing with it, so the ratios show both
        self.unsigned_fig = b.results.figure(section, UNSIGNED_LABEL, "s")
        self.unsigned_s3 = ctx.moto.client(sign_payload=False)
        self.unsigned_cfg = TransferConfig(
            multipart_chunksize=8 * MIB, multipart_threshold=8 * MIB, max_concurrency=10
        )
        self.parts_fig = b.results.figure(section, PARTS_LABEL, "s")
        self.complete_fig = b.results.figure(
            section,
            COMPLETE_LABEL,
            "s",
            note="moto joins the parts and writes the object out here, in one thread",
        )
        # what the daemon uploads is its snapshot: a copy made a moment before, not a file
        # written long ago; on this machine that alone makes the same upload slower
        self.fresh_fig = b.results.figure(
            section,
            FRESH_LABEL,
            "s",
            note="the copy timed above, uploaded at once: what the daemon uploads is such a "
            "copy (its snapshot)",
        )

    def run(self, i: int) -> None:
        ctx = self.ctx
        src = ctx.src
        self.md5.samples.append(timed(lambda: md5_of(src.files())))
        pairs = [(f, src.home.parent / f"copy-{f.name}") for f in src.files()]
        self.copy.samples.append(timed(functools.partial(_copy_all, pairs)))
        fresh = f"raw/{uuid.uuid4().hex}"

        def upload_copies() -> None:
            for _, c in pairs:
                self.unsigned_s3.upload_file(
                    str(c), ctx.bucket, f"{fresh}/{c.name}", Config=self.unsigned_cfg
                )

        self.fresh_fig.samples.append(timed(upload_copies))
        ctx.after_run()
        for _, c in pairs:
            c.unlink()
        for fig, cfg, client in [
            *((f, c, ctx.s3) for f, c in self.uploads),
            (self.unsigned_fig, self.unsigned_cfg, self.unsigned_s3),
        ]:
            prefix = f"raw/{uuid.uuid4().hex}"

            def upload(prefix: str = prefix, cfg: Any = cfg, client: Any = client) -> None:
                for f in src.files():
                    client.upload_file(str(f), ctx.bucket, f"{prefix}/{f.name}", Config=cfg)

            fig.samples.append(timed(upload))
            ctx.after_run()
        sending, completing = multipart_split(
            self.unsigned_s3, ctx.bucket, f"raw/{uuid.uuid4().hex}", src.files()
        )
        self.parts_fig.samples.append(sending)
        self.complete_fig.samples.append(completing)
        ctx.after_run()
        ctx.b.log(
            f"[{ctx.case.label}] raw run {i + 1}: md5 {self.md5.samples[-1]:.2f} s, uploads "
            + ", ".join(f"{f.samples[-1]:.2f}" for f, _ in self.uploads)
            + f", unsigned {self.unsigned_fig.samples[-1]:.2f}"
            + f", fresh copy {self.fresh_fig.samples[-1]:.2f}"
            + f", by hand: parts {sending:.2f} + complete {completing:.2f}"
        )

    def finish(self) -> None:
        """Name the best TransferConfig and add md5 + that upload, one after the other."""
        b = self.ctx.b
        best_fig = min((f for f, _ in self.uploads), key=lambda f: f.median)
        best_fig.note = "best TransferConfig"
        both = b.results.figure(
            self.ctx.section, "md5 + raw upload (best config), one after the other", "s"
        )
        both.samples = [m + u for m, u in zip(self.md5.samples, best_fig.samples, strict=True)]
        b.results.figure(
            self.ctx.section,
            "raw upload, best config",
            "s",
            note=best_fig.label.removeprefix("raw boto3 upload_file, "),
        ).samples = list(best_fig.samples)


# --- the manual route ------------------------------------------------------------------------


def manual_repo(path: Path, remote: Path, storage_url: str, endpoint: str) -> Path:
    """A Git + DVC repository whose DVC remote is the bucket, cloned from ``remote``."""
    run(["git", "clone", "-q", remote, path])
    run(["git", "symbolic-ref", "HEAD", "refs/heads/main"], cwd=path)
    dvc = tool("dvc")
    run([*dvc, "init", "-q"], cwd=path)
    run([*dvc, "config", "core.analytics", "false"], cwd=path)
    run([*dvc, "config", "core.check_update", "false"], cwd=path)
    run([*dvc, "remote", "add", "-d", "storage", storage_url], cwd=path)
    run([*dvc, "remote", "modify", "storage", "endpointurl", endpoint], cwd=path)
    run([*dvc, "remote", "modify", "storage", "region", "us-east-1"], cwd=path)
    run(["git", "add", "-A"], cwd=path)
    run(["git", "commit", "-q", "-m", "init"], cwd=path)
    run(["git", "push", "-q", "origin", "main"], cwd=path)
    return path


def manual_version(repo: Path, name: str, tag: str, steps: dict[str, float]) -> None:
    """What a careful user types for one version: add, push, commit, tag, push."""
    dvc = tool("dvc")
    message = json.dumps({"source": name, "by": "hand"})
    t = time.perf_counter()
    run([*dvc, "add", "-q", name], cwd=repo)
    t1 = time.perf_counter()
    run([*dvc, "push", "-q"], cwd=repo)
    t2 = time.perf_counter()
    run(["git", "add", f"{name}.dvc", ".gitignore"], cwd=repo)
    run(["git", "commit", "-q", "-m", f"{tag}"], cwd=repo)
    run(["git", "tag", "-a", tag, "-m", message], cwd=repo)
    run(["git", "push", "-q", "--atomic", "origin", "main", tag], cwd=repo)
    t3 = time.perf_counter()
    for key, value in (("dvc add", t1 - t), ("dvc push", t2 - t1), ("git", t3 - t2)):
        steps[key] = steps.get(key, 0.0) + value


class ManualRoute(Route):
    """The real CLIs: dvc add, dvc push, git commit, git tag, git push."""

    def __init__(self, ctx: RouteContext) -> None:
        self.ctx = ctx
        b, section = ctx.b, ctx.section
        self.total = b.results.figure(
            section,
            "manual route: dvc add, dvc push, git commit, git tag, git push",
            "s",
            note="dvc push with DVC's default jobs (4 x cores)",
        )
        self.parts = {
            k: b.results.figure(section, f"manual route, {k} alone", "s")
            for k in ("dvc add", "dvc push", "git")
        }
        self.repo = manual_repo(
            ctx.gdir / "manual",
            make_bare_remote(ctx.gdir / "manual.git"),
            f"s3://{ctx.bucket}/manual",
            ctx.moto.endpoint,
        )
        self.name = "model" if ctx.case.shards else "model.bin"

    def run(self, i: int) -> None:
        ctx, repo = self.ctx, self.repo
        dest = ctx.src.place(repo / self.name)
        steps: dict[str, float] = {}
        try:
            tag = f"bench/{ctx.case.name}@v1.{i}.0"
            self.total.samples.append(timed(lambda: manual_version(repo, self.name, tag, steps)))
        finally:
            ctx.src.take_back(dest)
        for k, fig in self.parts.items():
            fig.samples.append(steps[k])
        ctx.b.log(
            f"[{ctx.case.label}] manual run {i + 1}: {self.total.samples[-1]:.2f} s ({steps})"
        )
        shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)


# --- 4. idle --------------------------------------------------------------------------------------


def idle_group(b: Bench) -> None:
    plan = b.plan
    gdir = b.dir("idle")
    section = "4. Idle cost"
    cpu = b.results.figure(
        section,
        f"daemon CPU, {plan.idle_watches} watches, {plan.idle_seconds:.0f} s windows",
        "% of one core",
        note="utime+stime of the process tree (incl. reaped children)",
    )
    rss = b.results.figure(section, "daemon RSS (VmRSS of the daemon process)", "MiB")
    pss = b.results.figure(section, "daemon process-tree PSS", "MiB")
    with MotoServer() as moto:
        bucket = moto.new_bucket()
        remote = make_bare_remote(gdir / "remote.git")
        watches = []
        for i in range(plan.idle_watches):
            path = gdir / f"watch{i}"
            path.mkdir()
            for j in range(2):  # a little history: each watch already has two checkpoints
                write_random(path / f"epoch-{j}.bin", 64 * 1024)
            watches.append(Watch(path, f"bench/idle{i}", settle_seconds=2.0))
        daemon = Daemon(
            root=gdir / "d",
            watches=watches,
            storage_url=f"s3://{bucket}/cpv",
            endpoint_url=moto.endpoint,
            remote=remote,
        )
        with daemon:
            want = 2 * plan.idle_watches
            wait_until(
                lambda: len(remote_tags(remote)) >= want, 300, "the initial versions", interval=0.1
            )
            time.sleep(5.0)
            for r in range(plan.runs):
                c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
                time.sleep(plan.idle_seconds)
                c1, t1 = cpu_seconds(daemon.pid), time.monotonic()
                cpu.samples.append(100.0 * (c1 - c0) / (t1 - t0))
                rss.samples.append(rss_bytes(daemon.pid) / MIB)
                pss.samples.append(tree_pss_bytes(daemon.pid) / MIB)
                b.log(
                    f"[idle] window {r + 1}: {cpu.samples[-1]:.2f}% CPU, {rss.samples[-1]:.0f} MiB"
                )
    shutil.rmtree(gdir, ignore_errors=True)


# --- 5. queries ---------------------------------------------------------------------------------


def cmd_time(argv: Sequence[str], cwd: Path | None = None, timeout: float = 600.0) -> float:
    return timed(lambda: run(argv, cwd=cwd, timeout=timeout))


def query_group(b: Bench) -> None:
    plan = b.plan
    n = plan.query_versions
    gdir = b.dir("queries")
    section = f"5. Queries ({n:,} versions of one artifact)"
    artifact = "bench/big"
    build = b.results.figure(
        section, "building the registry with git fast-import", "s", note="setup, not a target"
    )
    registry = gdir / "registry"
    storage = gdir / "storage"
    storage.mkdir()
    build.samples.append(build_query_registry(registry, artifact, n, str(storage)))
    daemon = Daemon(
        root=gdir / "d",
        watches=[Watch(gdir / "watch", artifact, 2.0)],
        storage_url=str(storage),
        registry_path=registry,
    )
    cpvctl = tool("cpvctl")
    sock = ["--socket", str(daemon.socket)]
    figs = {
        "versions": b.results.figure(
            section, f"cpvctl versions {artifact}", "s", note="a real cpvctl process, table output"
        ),
        "versions --json": b.results.figure(section, f"cpvctl versions {artifact} --json", "s"),
        "status": b.results.figure(section, "cpvctl status", "s"),
    }
    cold = b.results.figure(
        section,
        "cpvctl versions, first call after the daemon starts",
        "s",
        note="the daemon reads the tags once, then caches",
    )
    start = b.results.figure(
        section, "cpvctl --version", "s", note=f"median of {plan.version_reps} per run"
    )
    python = b.results.figure(section, "python -c pass (interpreter start-up, for scale)", "s")
    gto = b.results.figure(section, f"gto show {artifact}", "s", note="run in the registry")
    argv = {
        "versions": [*cpvctl, *sock, "versions", artifact],
        "versions --json": [*cpvctl, *sock, "versions", artifact, "--json"],
        "status": [*cpvctl, *sock, "status"],
    }
    with daemon:
        cold.samples.append(cmd_time(argv["versions"]))
        listed = json.loads(run(argv["versions --json"]).stdout)
        if len(listed) != n:
            raise RuntimeError(f"cpvctl versions --json listed {len(listed)}, expected {n}")
        for _ in range(plan.runs):
            for key, fig in figs.items():
                reps = [cmd_time(argv[key]) for _ in range(plan.query_reps)]
                fig.samples.append(sorted(reps)[len(reps) // 2])
            reps = [cmd_time([*cpvctl, "--version"]) for _ in range(plan.version_reps)]
            start.samples.append(sorted(reps)[len(reps) // 2])
            reps = [cmd_time([sys.executable, "-c", "pass"]) for _ in range(plan.version_reps)]
            python.samples.append(sorted(reps)[len(reps) // 2])
        b.log(
            f"[queries] versions {figs['versions'].median:.3f} s, status "
            f"{figs['status'].median:.3f} s, --version {start.median:.3f} s"
        )
    gto_times(b, gto, registry, artifact)
    # for scale: gto on a registry a tenth the size
    small_n = max(n // 10, 10)
    small = gdir / "registry-small"
    build_query_registry(small, artifact, small_n, str(storage))
    gto_small = b.results.figure(
        section, f"gto show {artifact} at {small_n:,} versions", "s", note="for scale"
    )
    gto_times(b, gto_small, small, artifact)
    shutil.rmtree(gdir, ignore_errors=True)


def gto_times(b: Bench, fig: Figure, registry: Path, artifact: str) -> None:
    """``gto show`` runs; one only when it is slow, a lower bound when it times out."""
    plan = b.plan
    for r in range(plan.runs):
        try:
            t = cmd_time([*tool("gto"), "show", artifact], cwd=registry, timeout=plan.gto_timeout)
        except subprocess.TimeoutExpired:
            fig.samples.append(plan.gto_timeout)
            fig.note += f"; timed out after {plan.gto_timeout:.0f} s: a lower bound"
            b.log(f"[queries] gto show timed out after {plan.gto_timeout:.0f} s")
            return
        fig.samples.append(t)
        b.log(f"[queries] {fig.label} run {r + 1}: {t:.1f} s")
        if t > plan.gto_repeat_below:
            fig.note += f"; one run only (over {plan.gto_repeat_below:.0f} s each)"
            return


def all_groups(b: Bench) -> dict[str, Callable[[], None]]:
    groups: dict[str, Callable[[], None]] = {}
    for case in b.plan.cases:
        groups[f"e2e-{case.name}"] = lambda case=case: e2e_group(b, case)  # type: ignore[misc]
    from benchmarks.burst import burst_group  # it builds on this module's helpers

    groups["burst"] = lambda: burst_group(b)
    groups["idle"] = lambda: idle_group(b)
    groups["queries"] = lambda: query_group(b)
    from benchmarks.fleet import fleet_group
    from benchmarks.gc_group import gc_group  # it imports Bench from here
    from benchmarks.hooks_burst import hooks_group  # it builds on this module's helpers

    groups["gc"] = lambda: gc_group(b)
    groups["fleet"] = lambda: fleet_group(b)
    groups["hooks"] = lambda: hooks_group(b)
    from benchmarks.transfer_follow import transfer_group  # issue 18: in-watch writers

    groups["transfer"] = lambda: transfer_group(b)

    from benchmarks.backlog_group import backlog_group  # issue 18: cap, lag, coalescing

    groups["backlog"] = lambda: backlog_group(b)

    from benchmarks.cost_group import cost_group
    from benchmarks.pull_group import pull_group

    groups["pull"] = lambda: pull_group(b)
    groups["cost"] = lambda: cost_group(b)
    return groups
