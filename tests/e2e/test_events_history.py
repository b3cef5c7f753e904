"""``cpvctl events`` through the real daemon (issue 14): it prints what happened and exits;
``--follow`` says it waits when there is nothing yet, then shows new events, and stops on
Ctrl-C with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, versions_of, wait_for


def test_events_history_then_follow(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "demo/model")])
    with d:
        fresh = cpvctl(d.socket, "events", timeout=30)  # returns: never follows by default
        assert fresh.returncode == 0 and fresh.stdout == ""
        assert "no events yet" in fresh.stderr

        follow = subprocess.Popen(
            [sys.executable, "-m", "cpvctl", "--socket", str(d.socket), "events", "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert follow.stderr is not None and follow.stdout is not None
            assert "waiting for events" in follow.stderr.readline()
            (ck / "epoch-1.bin").write_bytes(b"one" * 1000)
            seen = []
            for line in follow.stdout:
                seen.append(line)
                if "versioned" in line:
                    break
            os.killpg(follow.pid, signal.SIGINT)
            follow.wait(timeout=30)
        finally:
            if follow.poll() is None:
                os.killpg(follow.pid, signal.SIGKILL)
                follow.wait()
        assert follow.returncode == 0
        assert any("detected" in ln and "demo/model" in ln for ln in seen), seen

        wait_for(lambda: versions_of(d, "demo/model") == ["v1.0.0"], what="v1.0.0")
        recent = cpvctl(d.socket, "events", "--count", "1", "--json", timeout=30)
        assert recent.returncode == 0 and len(recent.stdout.splitlines()) == 1
        assert cpvctl(d.socket, "events", "--since", "1h", timeout=30).stdout.count("\n") >= 3
        later = cpvctl(d.socket, "events", "--since", "2099-01-01T00:00:00+00:00", timeout=30)
        assert later.returncode == 0 and later.stdout == ""
