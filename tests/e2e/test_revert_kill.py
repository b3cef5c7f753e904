"""A kill after ``revert`` restored the bytes and before it finished (issue 15 #14, second
half), through the real daemon: the restored bytes must not become a new version.

A reference-transaction hook holds the revert's registry commit, which comes after the
files are swapped in, so the kill lands there every time. The target is ``--to`` the
artifact's new watch directory (the run moved), where no ledger row named those bytes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, event_history, versions_of, wait_for

HOOK = """#!/bin/sh
if [ -e "{hold}" ] && [ "$1" = prepared ]; then
    touch "{held}"
    sleep 30
fi
exit 0
"""


def test_kill_between_restore_and_ledger_makes_no_new_version(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck, moved = short_tmp / "ck", short_tmp / "moved"
    hold, held = short_tmp / "hold", short_tmp / "held"
    d = daemon_factory(watches=[Watch(ck, "k/a")])
    one = os.urandom(5000)
    with d:
        (ck / "one.bin").write_bytes(one)
        wait_for(lambda: versions_of(d, "k/a") == ["v1.0.0"], timeout=30, what="v1.0.0")
        (ck / "two.bin").write_bytes(os.urandom(5000))
        wait_for(lambda: versions_of(d, "k/a")[0] == "v1.1.0", timeout=30, what="v1.1.0")
    d.watches = [Watch(moved, "k/a")]
    with d:
        hook = d.registry / ".git" / "hooks" / "reference-transaction"
        hook.write_text(HOOK.format(hold=hold, held=held))
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
        hold.touch()
        target = moved
        revert = subprocess.Popen(
            [sys.executable, "-m", "cpvctl", "--socket", str(d.socket),
             "revert", "k/a", "v1.0", "--to", str(target)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(held.exists, timeout=30, what="the revert inside its commit")
            d.kill()
        finally:
            revert.wait(30)
    assert (target / "one.bin").read_bytes() == one  # restored before the kill
    hold.unlink()
    with d:
        # the start-up rescan finds the restored file; once it is handled, nothing is left.
        # The revert restores it by renaming a temporary name, which proves it complete at
        # once (cpvd.watch.proof): its job may have been skipped already before the kill
        # (its md5 was recorded before the bytes landed), and the rescan then finds it
        # handled and says nothing. Only that file can make a skipped job here.
        wait_for(
            lambda: d.client().status()["queue"]["skipped"] >= 1
            or any(
                e["type"] in ("skipped", "versioned", "unchanged")
                and e["data"].get("path") == str(target / "one.bin")
                for e in event_history(d.socket)
            ),
            timeout=60,
            what="the restored file handled",
        )
        time.sleep(0.3 + 2.5)  # settle + a rescan period: nothing more may come
        assert versions_of(d, "k/a") == ["v1.1.0", "v1.0.0"]
