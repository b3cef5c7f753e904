"""Issue 16's benchmark line: a burst with two hooks configured (a program and a webhook,
both real, both taking every ``version.created``) against the same burst with none.

The two daemons take turns (run ``i`` starts with the hooked one when ``i`` is odd), on
local storage with a bare Git remote: the fastest versioning this machine does, so the
hooks' share of the work is as large as it gets. The rate is measured until the last tag
is on the remote, as in the burst group; the time until the last hook delivery is
reported beside it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.procs import MIB, Daemon, Watch, cpu_seconds, make_bare_remote, remote_tags
from benchmarks.report import Results, ratio
from benchmarks.scenarios import Bench, tags_reach, wait_until, write_random

SECTION = "7. Hooks"
SCRIPT = "#!/bin/sh\ncat > /dev/null\n"
CPU_NOTE = "utime+stime of the daemon's process tree (git and hook programs included) / versions"


@contextmanager
def receiver() -> Iterator[tuple[str, list[int]]]:
    """A webhook receiver on 127.0.0.1 answering 204; yields its URL and a hit counter."""
    hits = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hits[0] += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cpv", hits
    finally:
        server.shutdown()
        server.server_close()


def hooks_toml(script: Path, url: str) -> str:
    return f"""
[[hook]]
name = "eval"
on = ["version.created"]
exec = ["{script}", "{{artifact}}", "{{version}}"]

[[hook]]
name = "web"
on = ["version.created"]
url = "{url}"
secret_env = "CPV_BENCH_SECRET"
"""


def hooks_group(b: Bench) -> None:
    plan, gdir = b.plan, b.dir("hooks")
    n = plan.burst_n
    plain = b.results.figure(SECTION, f"burst of {n} x 1 MiB, no hooks, versions/s", "versions/s")
    hooked = b.results.figure(
        SECTION, f"burst of {n} x 1 MiB, two hooks, versions/s", "versions/s",
        note="an exec hook and a signed webhook, both on every version.created",
    )  # fmt: skip
    drained = b.results.figure(
        SECTION, f"two hooks: time until both took all {n} events", "s",
        note="from the drop; the versions are on the remote before this",
    )  # fmt: skip
    cpu = {
        False: b.results.figure(SECTION, "daemon CPU per version, no hooks", "ms",
                                note=CPU_NOTE),
        True: b.results.figure(SECTION, "daemon CPU per version, two hooks", "ms",
                               note=CPU_NOTE + ", every delivery included (the programs too)"),
    }  # fmt: skip
    script = gdir / "eval.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    with receiver() as (url, hits):
        for r in range(plan.runs):
            order = (False, True) if r % 2 == 0 else (True, False)
            for with_hooks in order:
                extra = hooks_toml(script, url) if with_hooks else ""
                fig = hooked if with_hooks else plain
                root = gdir / f"r{r}-{int(with_hooks)}"
                elapsed, delivered, cpu_s = _burst(b, root, n, extra, hits)
                fig.samples.append(n / elapsed)
                cpu[with_hooks].samples.append(cpu_s / n * 1000)
                if with_hooks:
                    drained.samples.append(delivered)
                took = f", delivered in {delivered:.2f} s" if with_hooks else ""
                label = "two hooks" if with_hooks else "no hooks"
                b.log(
                    f"[hooks] run {r + 1} {label}: {n / elapsed:.1f}/s{took}, "
                    f"{cpu_s / n * 1000:.0f} ms CPU per version"
                )
    shutil.rmtree(gdir, ignore_errors=True)


def _burst(
    b: Bench, root: Path, n: int, extra: str, hits: list[int]
) -> tuple[float, float, float]:
    """Drop ``n`` checkpoints at once; seconds until the last tag is on the remote, until
    both hooks took every event (0 without hooks), and the daemon's CPU seconds to then."""
    watch, staging = root / "watch", root / "staging"
    staging.mkdir(parents=True)
    remote = make_bare_remote(root / "remote.git")
    daemon = Daemon(
        root=root / "d", watches=[Watch(watch, "bench/hooks", b.plan.settle)],
        storage_url=str(root / "storage"), remote=remote, extra_toml=extra,
        env={"CPV_BENCH_SECRET": "bench-secret"},
    )  # fmt: skip
    names = [f"ck-{j:03d}.bin" for j in range(n)]
    for name in names:
        write_random(staging / name, MIB)
    with daemon:
        before = hits[0]
        cpu0 = cpu_seconds(daemon.pid)
        t0 = time.perf_counter()
        for name in names:
            os.rename(staging / name, watch / name)
        wait_until(tags_reach(remote, "bench/hooks@", n), 900, f"{n} tags", interval=0.02)
        elapsed = time.perf_counter() - t0
        delivered = 0.0
        if extra:
            wait_until(lambda: hits[0] - before >= n and _pending(daemon) == 0, 300, "hooks")
            delivered = time.perf_counter() - t0
        else:  # the queue is empty and the last push done: the same end as with hooks
            wait_until(lambda: daemon.client().status()["queue"]["depth"] == 0, 300, "queue")
        used = cpu_seconds(daemon.pid) - cpu0
    assert len(remote_tags(remote, "bench/hooks@")) == n
    return elapsed, delivered, used


def _pending(daemon: Daemon) -> int:
    return sum(h["pending"] for h in daemon.client().hooks()["hooks"])


def add_hooks_target(results: Results, n: int) -> None:
    """The issue's line: the burst rate with two hooks within 10 % of the rate without."""
    plain = results.find(SECTION, f"burst of {n} x 1 MiB, no hooks, versions/s")
    hooked = results.find(SECTION, f"burst of {n} x 1 MiB, two hooks, versions/s")
    if plain is None or hooked is None:
        return
    results.target(
        "burst with two hooks / burst without",
        ratio(hooked, plain),
        "x",
        ">= 0.9x",
        f"median rates: {hooked.median:.1f}/s with an exec hook and a webhook, "
        f"{plain.median:.1f}/s with none; turns alternate",
    )
