"""The real daemon runs its working threads at ``[daemon] nice`` and keeps its main thread
(the event loop: API, watcher relay) at the priority it was started with (issue 18).
Read from ``/proc/PID/task/*/stat``, where the kernel keeps each thread's nice value."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess, Watch, versions_of, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def thread_nices(pid: int) -> dict[int, int]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except FileNotFoundError:
            continue  # a thread that just ended
        out[int(tid)] = int(text[text.rindex(")") + 2 :].split()[16])
    return out


@pytest.mark.parametrize("nice", [10, 0])
def test_working_threads_run_at_the_configured_nice(
    nice: int, short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert base < 10, "run the tests at a normal priority"
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "t/a", settle_seconds=0.2)],
                       extra_daemon={"nice": nice})  # fmt: skip
    with d:
        (ck / "m.bin").write_bytes(os.urandom(100_000))
        wait_for(lambda: versions_of(d, "t/a") == ["v1.0.0"], timeout=60, what="the version")
        assert d.proc is not None
        pid = d.proc.pid
        nices = thread_nices(pid)
    assert nices[pid] == base, "the event loop keeps its priority"
    lowered = [tid for tid, n in nices.items() if n == nice and nice > base]
    if nice:
        # the registry, snapshot and io pools have run: at least those three threads
        assert len(lowered) >= 3, nices
    else:
        assert set(nices.values()) == {base}, nices
