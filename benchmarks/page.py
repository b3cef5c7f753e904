"""``python -m benchmarks.page [N]``: what each view of the local page costs at N versions
(default 10,000), through ``cpvctl ui``'s server and the real daemon.

The registry is built with ``git fast-import`` (benchmarks.querybuild); the page server runs
in this process, the daemon in its own. Each figure is the median and the worst of several
requests as the page makes them (the first call after start-up, which reads the tags, is
reported on its own; "first" is each view's first request, before the daemon caches its
answer until the next change). With Playwright and chromium at hand it also times the whole page in
a browser: load to artifacts shown, artifact click to table and plot drawn, a page turn, a
sort by metric. Results are printed, not asserted.
"""

from __future__ import annotations

import http.client
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks.procs import Daemon, Watch
from benchmarks.querybuild import build_query_registry
from cpvctl.ui.guard import COOKIE
from cpvctl.ui.server import PageServer, start

ARTIFACT = "bench/page"
REPS = 15


def fetch(server: PageServer, target: str) -> int:
    """One GET as the page makes it; the bytes received."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", target, headers={"Cookie": f"{COOKIE}={server.guard.token}"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (target, resp.status, body[:200])
        return len(body)
    finally:
        conn.close()


def timed(fn: Callable[[], object], reps: int = REPS) -> tuple[float, float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), max(samples)


def http_views(server: PageServer, n: int) -> list[tuple[str, str]]:
    q = f"/v1/versions?artifact={ARTIFACT}"
    return [
        ("page (index.html)", "/"),
        ("status (queue)", "/v1/status"),
        ("artifacts", "/v1/artifacts"),
        ("versions, first page of 100", f"{q}&offset=0&limit=100&sort=version&order=desc"),
        ("versions, page in the middle", f"{q}&offset={n // 2}&limit=100&sort=version"),
        ("versions sorted by a metric", f"{q}&offset=0&limit=100&sort=metric:loss&order=asc"),
        ("plot data (all versions, 4 fields)",
         f"{q}&fields=version,metrics,stages&sort=version&order=asc&limit=10000"),
        ("whole list, unpaged (cpvctl versions)", q),
    ]


def browser_views(server: PageServer) -> list[tuple[str, float]]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    chromium = shutil.which("chromium")
    if chromium is None:
        return []
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        t0 = time.perf_counter()
        page.goto(server.url())
        page.wait_for_selector(f'#artifacts tr[data-artifact="{ARTIFACT}"]')
        out.append(("load to artifacts shown", time.perf_counter() - t0))
        t0 = time.perf_counter()
        page.click(f'#artifacts tr[data-artifact="{ARTIFACT}"]')
        page.wait_for_selector("#plot svg polyline")
        page.wait_for_selector("#versions tbody tr[data-version]")
        out.append(("click artifact to table + plot drawn", time.perf_counter() - t0))
        for label, action, ready in (
            ("next page", "#next", "() => document.getElementById('page-info').textContent"
             ".startsWith('101')"),
            ("sort by metric", "#versions th[data-sort=metric]",
             "() => document.querySelector('th.sorted-desc[data-sort=metric]')"),
        ):
            t0 = time.perf_counter()
            page.click(action)
            page.wait_for_function(ready)
            out.append((label, time.perf_counter() - t0))
        browser.close()
    return out


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10_000
    root = Path(tempfile.mkdtemp(prefix="cpvpg-", dir="/tmp"))
    try:
        storage = root / "storage"
        storage.mkdir()
        build = build_query_registry(root / "registry", ARTIFACT, n, str(storage))
        print(f"built {n} versions in {build:.1f} s (setup)")
        daemon = Daemon(root=root / "d", watches=[Watch(root / "w", ARTIFACT, 2.0)],
                        storage_url=str(storage), registry_path=root / "registry")
        daemon.start()
        server = start(str(daemon.socket))
        try:
            q = f"/v1/versions?artifact={ARTIFACT}&offset=0&limit=100"
            t0 = time.perf_counter()
            fetch(server, q)
            print(f"first versions page after start-up: {time.perf_counter() - t0:.3f} s")
            print(f"{'view':45} {'first s':>8} {'median s':>9} {'max s':>7} {'bytes':>9}")
            for label, target in http_views(server, n):
                t0 = time.perf_counter()
                size = fetch(server, target)
                first = time.perf_counter() - t0
                med, worst = timed(partial(fetch, server, target))
                print(f"{label:45} {first:8.4f} {med:9.4f} {worst:7.4f} {size:9d}")
            for label, seconds in browser_views(server):
                print(f"browser: {label:36} {seconds:9.4f}")
        finally:
            server.shutdown()
            server.server_close()
            daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
