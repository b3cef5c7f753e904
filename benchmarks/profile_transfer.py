"""Measure (and optionally profile) cpvd's transfer path against a raw boto3 upload.

A measuring tool for the performance work, not the benchmark harness: it starts its own
moto server (a separate process on 127.0.0.1), a bare Git remote and the real daemon, and
prints one line per measurement. Run from the repository root::

    python benchmarks/profile_transfer.py e2e --size-mib 1024 --runs 3 [--manual] [--pyspy DIR]
    python benchmarks/profile_transfer.py burst --count 200
    python benchmarks/profile_transfer.py idle --seconds 30 --watches 5
    python benchmarks/profile_transfer.py versions --count 10000

``e2e``: a file of SIZE is renamed into a watched directory; the clock stops when its tag is
in the bare remote. The quiet period (``--settle``) is included in the e2e time and printed,
together with the e2e time minus it. Baselines on the same server in the same run: md5 of the
file, a raw boto3 ``upload_file`` (8 MiB parts, 10 threads), and (``--manual``) the manual
route ``dvc add``/``dvc push``/``git commit``/``git tag``/``git push``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENV = {
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "GTO_NO_ANALYTICS": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "PYTHONPATH": str(ROOT),
}
os.environ.update(ENV)
for _var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "CPV_CONFIG"):
    os.environ.pop(_var, None)

from tests.e2e.harness import DaemonProcess, Watch  # noqa: E402

MIB = 1024 * 1024
BIN = Path(sys.executable).parent
ARTIFACT = "bench/model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def s3(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def make_file(path: Path, size: int) -> None:
    """Random bytes: one random MiB repeated with a per-MiB counter, so md5 sees new data."""
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as f:
        for i in range(size // MIB):
            block[:8] = i.to_bytes(8, "little")
            f.write(block)
        f.write(os.urandom(size % MIB))


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def files_of(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.is_dir() else [path]


def raw_upload(endpoint: str, bucket: str, path: Path) -> float:
    """One file, or each file of a directory in turn, as ``dvc push`` of a directory would."""
    from boto3.s3.transfer import TransferConfig

    client = s3(endpoint)
    cfg = TransferConfig(
        multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=10
    )
    prefix = f"raw/{uuid.uuid4().hex}"

    def run() -> None:
        for f in files_of(path):
            client.upload_file(str(f), bucket, f"{prefix}/{f.name}", Config=cfg)

    t = timed(run)
    for f in files_of(path):
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{f.name}")
    return t


def md5_time(path: Path) -> float:
    def run() -> None:
        h = hashlib.md5()
        for f in files_of(path):
            with open(f, "rb") as fh:
                while chunk := fh.read(8 * MIB):
                    h.update(chunk)

    return timed(run)


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def manual_route(endpoint: str, bucket: str, work: Path, path: Path, n: int) -> float:
    """``dvc add`` + ``dvc push`` + ``git commit`` + ``git tag`` + ``git push``."""
    repo = work / f"manual-{n}"
    remote = work / f"manual-{n}.git"
    git("init", "-q", "--bare", "-b", "main", str(remote))
    git("init", "-q", "-b", "main", str(repo))
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}

    def dvc(*args: str) -> None:
        subprocess.run(
            [str(BIN / "dvc"), *args], cwd=repo, env=env, check=True, capture_output=True
        )

    dvc("init", "-q")
    dvc("remote", "add", "-d", "s3", f"s3://{bucket}/manual-{n}")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    git("remote", "add", "origin", str(remote), cwd=repo)
    target = repo / "model.bin"

    def route() -> None:
        os.link(path, target)  # appears in the workspace; dvc add then copies it to its cache
        dvc("add", "-q", "model.bin")
        dvc("push", "-q")
        git("add", "model.bin.dvc", ".gitignore", cwd=repo)
        git("commit", "-qm", "model", cwd=repo)
        git("tag", "-a", "-m", "{}", f"{ARTIFACT}@v1.0.0", cwd=repo)
        git("push", "-q", "--atomic", "--follow-tags", "origin", "main", cwd=repo)

    return timed(route)


def tag_on_remote(remote: Path, tag: str) -> bool:
    if (remote / "refs" / "tags" / tag).exists():
        return True
    packed = remote / "packed-refs"
    return packed.exists() and f" refs/tags/{tag}\n" in packed.read_text()


def count_remote_tags(remote: Path) -> int:
    out = git("for-each-ref", "--format=%(refname)", "refs/tags", cwd=remote)
    return sum(1 for line in out.splitlines() if "@v" in line)


def wait(pred: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(interval)


def daemon(
    work: Path, endpoint: str, bucket: str, watches: list[Watch], **kw: object
) -> DaemonProcess:
    remote = work / "remote.git"
    if not remote.exists():
        git("init", "-q", "--bare", "-b", "main", str(remote))
    return DaemonProcess(
        root=work / "d",
        watches=watches,
        storage_url=f"s3://{bucket}/dvc",
        endpoint_url=endpoint,
        remote=remote,
        **kw,  # type: ignore[arg-type]
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def pyspy(pid: int, out: Path | None) -> Iterator[None]:
    if out is None:
        yield
        return
    exe = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
    proc = subprocess.Popen(
        [
            exe,
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "-r",
            "200",
            "--threads",
            "-f",
            "speedscope",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def follow(
    events: Iterator[tuple[str, dict[str, object]]],
    out: list[tuple[float, str]],
    stop: threading.Event,
    tag: str,
) -> None:
    """Record when each event (and each progress phase) is first seen, until ``pushed``."""
    seen: set[str] = set()
    for name, data in events:
        what = f"{name}:{data['phase']}" if name == "progress" else name
        if what not in seen:
            seen.add(what)
            out.append((time.perf_counter(), what))
        if name == "pushed" or stop.is_set():
            break


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"


def cmd_e2e(args: argparse.Namespace) -> None:
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="cpvb-", dir="/tmp") as tmp, moto() as endpoint:
        work = Path(tmp)
        bucket = f"b{uuid.uuid4().hex[:10]}"
        s3(endpoint).create_bucket(Bucket=bucket)
        ck = work / "ck"
        staging = work / "staging"
        staging.mkdir()
        d = daemon(work, endpoint, bucket, [Watch(ck, ARTIFACT, settle_seconds=args.settle)])
        e2e: list[float] = []
        raw: list[float] = []
        md5s: list[float] = []
        manual: list[float] = []
        growth: list[int] = []
        with d:
            assert d.proc is not None
            for i in range(args.runs):
                if args.shards:
                    src = staging / f"shards-{i}"
                    src.mkdir()
                    for k in range(args.shards):
                        make_file(src / f"shard-{k:02d}.bin", size // args.shards)
                else:
                    src = staging / f"epoch-{i}.bin"
                    make_file(src, size)
                md5s.append(md5_time(src))
                raw.append(raw_upload(endpoint, bucket, src))
                if args.manual:
                    manual.append(manual_route(endpoint, bucket, work, src, i))
                base = rss_kib(d.proc.pid)
                tag = f"{ARTIFACT}@v1.{i}.0"
                out = Path(args.pyspy) / f"e2e-{i}.json" if args.pyspy else None
                peak = [base]
                stop = threading.Event()

                def sample(
                    pid: int = d.proc.pid, stop: threading.Event = stop, peak: list[int] = peak
                ) -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], rss_kib(pid))
                        time.sleep(0.05)

                sampler = threading.Thread(target=sample)
                sampler.start()
                timeline: list[tuple[float, str]] = []
                events = d.client().events(read_timeout=600)
                watcher = threading.Thread(target=follow, args=(events, timeline, stop, tag))
                watcher.start()
                with pyspy(d.proc.pid, out):
                    t0 = time.perf_counter()
                    os.rename(src, ck / src.name)
                    remote = Path(str(d.remote))
                    wait(functools.partial(tag_on_remote, remote, tag), 600)
                    e2e.append(time.perf_counter() - t0)
                stop.set()
                sampler.join()
                watcher.join(30)
                t_start = t0
                print("   ", ", ".join(f"{what} +{t - t_start:.2f}" for t, what in timeline))
                growth.append((peak[0] - base) // 1024)
                if args.shards:
                    shutil.rmtree(ck / src.name)
                else:
                    (ck / src.name).unlink()
                print(
                    f"run {i}: e2e {e2e[-1]:.2f} s (minus settle {e2e[-1] - args.settle:.2f}), "
                    f"raw boto3 {raw[-1]:.2f} s, md5 {md5s[-1]:.2f} s"
                    + (f", manual {manual[-1]:.2f} s" if manual else "")
                    + f", daemon RSS growth {growth[-1]} MiB",
                    flush=True,
                )
        print(f"size {args.size_mib} MiB, settle {args.settle} s")
        print(f"  e2e     {fmt(e2e)}")
        print(f"  raw     {fmt(raw)}")
        print(f"  md5     {fmt(md5s)}")
        net = [e - args.settle for e in e2e]
        print(
            f"  e2e/raw {statistics.median(e2e) / statistics.median(raw):.2f}x "
            f"(minus settle {statistics.median(net) / statistics.median(raw):.2f}x)"
        )
        if manual:
            print(
                f"  manual  {fmt(manual)}; "
                f"manual/e2e {statistics.median(manual) / statistics.median(e2e):.1f}x"
            )
        print(f"  RSS growth max {max(growth)} MiB")


def cmd_burst(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cpvb-", dir="/tmp") as tmp, moto() as endpoint:
        work = Path(tmp)
        bucket = f"b{uuid.uuid4().hex[:10]}"
        s3(endpoint).create_bucket(Bucket=bucket)
        ck = work / "ck"
        staging = work / "staging"
        staging.mkdir()
        d = daemon(work, endpoint, bucket, [Watch(ck, ARTIFACT, settle_seconds=args.settle)])
        with d:
            assert d.proc is not None
            for i in range(args.count):
                (staging / f"ck-{i:04d}.bin").write_bytes(os.urandom(args.size_kib * 1024))
            remote = Path(str(d.remote))
            out = Path(args.pyspy) / "burst.json" if args.pyspy else None
            with pyspy(d.proc.pid, out):
                t0 = time.perf_counter()
                for i in range(args.count):
                    name = f"ck-{i:04d}.bin"
                    os.rename(staging / name, ck / name)
                wait(lambda: count_remote_tags(remote) >= args.count, 900, 0.2)
                dt = time.perf_counter() - t0
            for line in d.log_path.read_text(errors="replace").splitlines():
                if "TIMING" in line:  # ad-hoc instrumentation, when present
                    print(line)
            commits = int(git("rev-list", "--count", "main", cwd=remote))
        print(
            f"burst {args.count} x {args.size_kib} KiB: {dt:.2f} s incl. settle {args.settle} s, "
            f"{args.count / dt:.1f} versions/s "
            f"({args.count / (dt - args.settle):.1f}/s minus settle); "
            f"{commits} commits on the remote"
        )


def cmd_idle(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cpvb-", dir="/tmp") as tmp, moto() as endpoint:
        work = Path(tmp)
        bucket = f"b{uuid.uuid4().hex[:10]}"
        s3(endpoint).create_bucket(Bucket=bucket)
        watches = [Watch(work / f"w{i}", f"bench/m{i}") for i in range(args.watches)]
        d = daemon(work, endpoint, bucket, watches)
        with d:
            assert d.proc is not None
            time.sleep(3)
            c0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_seconds(d.proc.pid), time.monotonic()
            print(
                f"idle {args.watches} watches {args.seconds} s: "
                f"CPU {100 * (c1 - c0) / (t1 - t0):.2f}% of one core, "
                f"RSS {rss_kib(d.proc.pid) // 1024} MiB (peak {hwm_kib(d.proc.pid) // 1024} MiB)"
            )


def cmd_versions(args: argparse.Namespace) -> None:
    """A registry with COUNT version tags (made with fast-import), queried through the daemon."""
    from cpvd.registry.metadata import VersionInfo

    with tempfile.TemporaryDirectory(prefix="cpvb-", dir="/tmp") as tmp:
        work = Path(tmp)
        d = DaemonProcess(root=work / "d", watches=[Watch(work / "ck", ARTIFACT)])
        d.start()
        d.stop()
        reg = d.registry
        head = git("rev-parse", "HEAD", cwd=reg).strip()
        lines = []
        for i in range(args.count):
            info = VersionInfo(
                artifact=ARTIFACT,
                version=f"v1.{i}.0",
                md5=hashlib.md5(str(i).encode()).hexdigest(),
                size=i,
                nfiles=1,
                is_dir=False,
                name=f"e{i}.bin",
                source=f"/x/e{i}.bin",
                metrics={"loss": 1.0 / (i + 1)},
                job_id=uuid.uuid4().hex,
            )
            msg = info.message().encode()
            lines.append(
                f"tag {ARTIFACT}@v1.{i}.0\nfrom {head}\n"
                f"tagger b <b@x> 1700000000 +0000\ndata {len(msg)}\n"
            )
            lines.append(msg.decode() + "\n")
        subprocess.run(
            ["git", "fast-import", "--quiet"], cwd=reg, input="".join(lines).encode(), check=True
        )
        with d:
            cpvctl = [sys.executable, "-m", "cpvctl", "--socket", str(d.socket)]
            times = []
            for _ in range(args.runs):
                t = timed(
                    lambda: subprocess.run(
                        [*cpvctl, "versions", ARTIFACT, *args.cpvctl_args],
                        check=True,
                        capture_output=True,
                    )
                )
                times.append(t)
            print(
                f"cpvctl versions {' '.join(args.cpvctl_args)} at {args.count} versions: "
                f"{fmt(times)}"
            )
            times = [
                timed(
                    lambda: subprocess.run(
                        [*cpvctl, "status", "--json"], check=True, capture_output=True
                    )
                )
                for _ in range(args.runs)
            ]
            print(f"cpvctl status: {fmt(times)}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("e2e")
    e.add_argument("--size-mib", type=int, default=256)
    e.add_argument("--runs", type=int, default=3)
    e.add_argument("--shards", type=int, default=0, help="a directory of N files instead")
    e.add_argument("--settle", type=float, default=0.2)
    e.add_argument("--manual", action="store_true")
    e.add_argument("--pyspy", metavar="DIR")
    b = sub.add_parser("burst")
    b.add_argument("--count", type=int, default=200)
    b.add_argument("--size-kib", type=int, default=1024)
    b.add_argument("--settle", type=float, default=0.2)
    b.add_argument("--pyspy", metavar="DIR")
    i = sub.add_parser("idle")
    i.add_argument("--seconds", type=float, default=30)
    i.add_argument("--watches", type=int, default=5)
    v = sub.add_parser("versions")
    v.add_argument("--count", type=int, default=10000)
    v.add_argument("--runs", type=int, default=5)
    v.add_argument("--json", dest="cpvctl_args", action="store_const", const=["--json"], default=[])
    args = p.parse_args()
    {"e2e": cmd_e2e, "burst": cmd_burst, "idle": cmd_idle, "versions": cmd_versions}[args.cmd](args)


if __name__ == "__main__":
    main()
