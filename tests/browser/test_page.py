"""The local page in a real browser (headless Debian chromium driven by Playwright), against
the real daemon and ``cpvctl ui``: versions, the metric plot, a ``<script>`` metric name shown
as text, a promote through the page, live progress, the daemon going away and coming back."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, wait_for
from tests.e2e.ui_support import XSS_METRIC, push_versions, running_ui

A = "ui/model"
DATA = "ui/data"
LOSSES = [0.9, 0.4, 0.6]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def daemon(short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    d = daemon_factory(
        watches=[
            Watch(short_tmp / "w", A, layout=None, data=[DATA]),
            Watch(short_tmp / "dw", DATA, kind="data", layout=None),
        ]
    )
    d.start()
    push_versions(d, DATA, [{}], short_tmp / "dw")
    metrics: list[dict[str, Any]] = [{"loss": x, "step": i} for i, x in enumerate(LOSSES)]
    metrics[-1][XSS_METRIC] = 7
    push_versions(d, A, metrics, short_tmp / "w")
    d.client().promote(A, "v1.1.0", "best")
    return d


def open_artifact(page: Any, url: str) -> None:
    page.goto(url)
    page.locator(f'#artifacts tr[data-artifact="{A}"]').click()
    page.wait_for_selector("#versions tbody tr[data-version]", timeout=TIMEOUT_MS)
    page.wait_for_selector("#plot svg", timeout=TIMEOUT_MS)


def test_the_page_shows_versions_the_plot_and_a_script_metric_as_text(
    daemon: DaemonProcess, browser: Any, screenshots: Callable[[Any, str], Path]
) -> None:
    with running_ui(daemon.socket) as ui:
        page = browser.new_page()
        open_artifact(page, ui.url)
        assert page.url == ui.base + "/"  # the token left the address bar for a cookie
        rows = page.locator("#versions tbody tr[data-version]")
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.version)") == [
            "v1.2.0", "v1.1.0", "v1.0.0"
        ]
        best_row = page.locator('#versions tr[data-version="v1.1.0"]')
        assert "best" in best_row.inner_text()
        artifact_row = page.locator(f'#artifacts tr[data-artifact="{A}"]').inner_text()
        assert "v1.1.0" in artifact_row and "v1.2.0" in artifact_row  # best, latest

        assert page.input_value("#metric") == "loss"  # the metric most versions have
        page.select_option("#metric", "loss")
        dots = page.locator("#plot circle").evaluate_all(
            "cs => cs.map(c => [c.dataset.version, +c.dataset.value, +c.getAttribute('cy'), "
            "c.getAttribute('class')])"
        )
        assert [(v, x) for v, x, _, _ in dots] == list(
            zip(["v1.0.0", "v1.1.0", "v1.2.0"], LOSSES, strict=True)
        )
        ys = {v: y for v, _, y, _ in dots}
        assert ys["v1.1.0"] > ys["v1.2.0"] > ys["v1.0.0"]  # lower loss, lower on the plot
        assert dict((v, c) for v, _, _, c in dots)["v1.1.0"] == "pt best"
        screenshots(page, "versions-and-plot")

        # the <script> metric name: text in the table and the menu, never markup
        options = page.locator("#metric option").evaluate_all("os => os.map(o => o.textContent)")
        assert XSS_METRIC in options
        assert XSS_METRIC in page.locator('#versions tr[data-version="v1.2.0"]').inner_text()
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img").count() == 0
        assert page.locator("script").count() == 3  # the page's own three

        # lineage both ways: what v1.0.0 was trained on, and from the data side, who used it
        page.locator('#versions tr[data-version="v1.0.0"]').click()
        page.wait_for_function(
            "() => document.getElementById('lineage').innerText.includes('trained on ui/data')"
        )
        assert f"trained on {DATA}@v1.0.0" in page.inner_text("#lineage")
        page.locator(f'#artifacts tr[data-artifact="{DATA}"]').click()
        page.wait_for_selector('#versions tr[data-version="v1.0.0"]')
        page.locator('#versions tr[data-version="v1.0.0"]').click()
        page.wait_for_function(
            "() => document.getElementById('lineage').innerText.includes('used by')"
        )
        used = page.inner_text("#lineage")
        assert all(f"used by {A}@{v}" in used for v in ("v1.0.0", "v1.1.0", "v1.2.0")), used
        screenshots(page, "lineage")
        page.close()


def test_a_promote_through_the_page_shows_in_cpvctl_show(
    daemon: DaemonProcess, browser: Any, screenshots: Callable[[Any, str], Path]
) -> None:
    with running_ui(daemon.socket) as ui:
        page = browser.new_page()
        open_artifact(page, ui.url)
        page.evaluate("window.__sameDocument = true")
        page.locator('#versions tr[data-version="v1.0.0"] button', has_text="promote").click()
        page.fill("#stage", "prod")
        screenshots(page, "promote-confirmation")
        page.click("#confirm-ok")
        wait_for(
            lambda: "prod" in daemon.client().show(A, "v1.0.0")["stages"],
            timeout=30,
            what="prod on v1.0.0",
        )
        res = cpvctl(daemon.socket, "--json", "show", f"{A}@v1.0.0")
        assert "prod" in json.loads(res.stdout)["stages"]
        page.wait_for_function(
            "() => document.querySelector('#versions tr[data-version=\"v1.0.0\"]')"
            ".innerText.includes('prod')",
            timeout=TIMEOUT_MS,
        )
        assert page.evaluate("window.__sameDocument") is True  # updated without a reload

        page.locator('#versions tr[data-version="v1.0.0"] button', has_text="revert").click()
        page.click("#confirm-ok")
        wait_for(lambda: daemon.client().show(A, "v1.0.0")["current"], timeout=60, what="revert")
        page.wait_for_function(
            "() => document.querySelector('#versions tr[data-version=\"v1.0.0\"]')"
            ".innerText.includes('current')",
            timeout=TIMEOUT_MS,
        )
        page.close()


def test_live_progress_and_a_new_version_arrive_without_reloading(
    daemon: DaemonProcess, browser: Any, short_tmp: Path, screenshots: Callable[[Any, str], Path]
) -> None:
    with running_ui(daemon.socket) as ui:
        page = browser.new_page()
        open_artifact(page, ui.url)
        page.wait_for_selector("#conn.ok", timeout=TIMEOUT_MS)
        page.evaluate(
            """() => { window.__sameDocument = true; window.__maxProgress = 0;
            new MutationObserver(() => {
              for (const bar of document.querySelectorAll('#running progress'))
                window.__maxProgress = Math.max(window.__maxProgress, bar.value);
            }).observe(document.body, {subtree: true, childList: true, attributes: true,
                                      characterData: true}); }"""
        )
        big = short_tmp / "w" / "big.dat"
        with open(big, "wb") as f:
            for _ in range(48):
                f.write(os.urandom(8 << 20))  # 384 MiB: hashing and storing take a while
        job = daemon.client().push(big, A, metrics={"loss": 0.1})
        wait_for(lambda: daemon.client().job(job["job_id"])["state"] == "done", timeout=240)
        page.wait_for_selector('#versions tr[data-version="v1.3.0"]', timeout=TIMEOUT_MS)
        assert page.evaluate("window.__maxProgress") > 0, "no progress bar moved"
        assert page.evaluate("window.__sameDocument") is True
        screenshots(page, "after-live-version")

        daemon.stop()
        page.wait_for_selector("#conn.down", timeout=TIMEOUT_MS)
        assert "not reachable" in page.inner_text("#conn")
        daemon.start()
        page.wait_for_selector("#conn.ok", timeout=TIMEOUT_MS)
        assert page.evaluate("window.__sameDocument") is True
        page.close()


def test_the_page_refuses_a_missing_or_wrong_token(daemon: DaemonProcess, browser: Any) -> None:
    with running_ui(daemon.socket) as ui:
        page = browser.new_page()
        missing = page.goto(ui.base + "/")
        assert missing is not None and missing.status == 401
        wrong = page.goto(ui.base + "/?token=not-the-token")
        assert wrong is not None and wrong.status == 403
        assert A not in page.content() and "v1." not in page.content()
        page.close()


def test_pause_resume_and_retry_of_a_failed_job_through_the_page(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess], browser: Any,
    screenshots: Callable[[Any, str], Path],
) -> None:
    d = daemon_factory(
        watches=[Watch(short_tmp / "w", A, layout=None)], extra_daemon={"retry_max_seconds": 0.05}
    )
    with d, running_ui(d.socket) as ui:
        blocker = d.root / "storage" / "files"  # a file where the storage's directory goes
        shutil.rmtree(blocker, ignore_errors=True)
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"not a directory")
        ck = short_tmp / "w" / "x.dat"
        ck.write_bytes(os.urandom(5000))
        job = d.client().push(ck, A)
        wait_for(lambda: d.client().job(job["job_id"])["state"] == "failed", timeout=60)

        (short_tmp / "w" / "torn.pt").write_bytes(b"PK\x03\x04" + os.urandom(3000))
        waiting = wait_for(lambda: d.client().status()["waiting"], timeout=60, what="waiting")

        page = browser.new_page()
        page.goto(ui.url)
        page.wait_for_function(
            "r => document.getElementById('waiting').innerText.includes(r)",
            arg=waiting[0]["reason"],
            timeout=TIMEOUT_MS,
        )
        assert "torn.pt" in page.inner_text("#waiting")
        failed = page.locator(f'#failed li[data-job="{job["job_id"]}"]')
        failed.wait_for(timeout=TIMEOUT_MS)
        screenshots(page, "queue-failed")
        blocker.unlink()
        failed.locator("button", has_text="retry").click()
        page.click("#confirm-ok")
        wait_for(lambda: d.client().job(job["job_id"])["state"] == "done", timeout=60)
        page.wait_for_selector(f'#artifacts tr[data-artifact="{A}"]', timeout=TIMEOUT_MS)
        page.wait_for_function(
            f"() => document.querySelector('#artifacts tr[data-artifact=\"{A}\"]')"
            ".innerText.includes('v1.0.0')",
            timeout=TIMEOUT_MS,
        )

        row = page.locator(f'#artifacts tr[data-artifact="{A}"]')
        row.locator("button", has_text="pause").click()
        page.click("#confirm-ok")
        wait_for(lambda: A in d.client().status()["daemon"]["paused"], timeout=30)
        row.locator("button", has_text="resume").wait_for(timeout=TIMEOUT_MS)
        row.locator("button", has_text="resume").click()
        page.click("#confirm-cancel")  # a cancelled confirmation does nothing
        assert A in d.client().status()["daemon"]["paused"]
        row.locator("button", has_text="resume").click()
        page.click("#confirm-ok")
        wait_for(lambda: A not in d.client().status()["daemon"]["paused"], timeout=30)
        page.close()


def test_the_page_shows_the_durability_lag_growing_and_the_recovery_point(
    daemon: DaemonProcess, browser: Any, short_tmp: Path
) -> None:
    """The page's CSP forbids eval, so the text is polled from here."""
    with running_ui(daemon.socket) as ui:
        page = browser.new_page()
        open_artifact(page, ui.url)

        def lag_text() -> str:
            return str(page.inner_text("#lag"))

        wait_for(lambda: "recovery point" in lag_text(), what="the recovery point shown")
        c = daemon.client()
        c.pause()
        waiting = short_tmp / "w" / "waiting.pt"
        waiting.write_bytes(os.urandom(4096))
        c.push(waiting, A)
        # the page refreshes its status on events and on its own
        wait_for(lambda: re.match(r"durability lag ([3-9]|\d\d+) s", lag_text()),
                 timeout=60, what="the lag growing on the page")  # fmt: skip
        c.resume()
        wait_for(lambda: lag_text().startswith("durability lag 0 s"), timeout=60,
                 what="the lag back to 0 on the page")  # fmt: skip
        page.close()
