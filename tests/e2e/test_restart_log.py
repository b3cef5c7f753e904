"""A restart does not log "checkpoint complete" for files already versioned (issue 14): the
rescan settles them again, but only a checkpoint the intake takes is news."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, versions_of, wait_for


def test_restart_logs_complete_only_for_new_checkpoints(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "demo/model")])
    old, new = ck / "epoch-1.bin", ck / "epoch-2.bin"
    with d:
        old.write_bytes(b"one" * 1000)
        wait_for(lambda: versions_of(d, "demo/model") == ["v1.0.0"], what="v1.0.0")
    first_run = d.log_path.read_text(errors="replace")
    assert f"checkpoint complete: {old}" in first_run
    with d:
        new.write_bytes(b"two" * 1000)
        wait_for(lambda: len(versions_of(d, "demo/model")) == 2, what="v1.1.0")

        def second_run() -> str:
            return d.log_path.read_text(errors="replace")[len(first_run) :]

        wait_for(lambda: f"already handled: {old}" in second_run(), what="old one seen again")
    log = second_run()
    assert f"checkpoint complete: {old}" not in log
    assert f"checkpoint complete: {new}" in log
