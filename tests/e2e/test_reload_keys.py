"""SIGHUP applies each key completely or not at all (issue 15 #8), through the real daemon.

Watches are live, including the directories ``revert --to`` may write into; [storage] and
[registry] are opened once at start, so a SIGHUP that changes them keeps the running values,
says so once in the log and lists the keys in ``status`` under ``daemon.restart_needed``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, versions_of, wait_for


def objects_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_sighup_keeps_restart_only_keys_and_applies_watches_completely(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    a, b = short_tmp / "a", short_tmp / "b"
    b.mkdir()
    d = daemon_factory(watches=[Watch(a, "h/a")])
    with d:
        assert d.proc is not None
        old_storage = d.root / "storage"
        new_storage, new_registry = d.root / "storage2", d.root / "registry2"
        d.watches = [Watch(a, "h/a"), Watch(b, "h/b")]
        d.storage_url = str(new_storage)
        d.write_config()
        text = d.config_path.read_text().replace(str(d.registry), str(new_registry))
        d.config_path.write_text(text)
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(
            lambda: [w["artifact"] for w in d.client().status()["watches"]] == ["h/a", "h/b"],
            what="the reloaded watches",
        )
        status = d.client().status()
        # status shows what is in use, and which changed keys wait for a restart
        assert status["storage"]["url"] == str(old_storage)
        assert status["registry"]["path"] == str(d.registry)
        assert status["daemon"]["restart_needed"] == ["registry.path", "storage.url"]
        # the warning is logged once; its line may reach the log file just after status
        # shows the new watches
        warned = "registry.path, storage.url changed"
        wait_for(lambda: warned in d.log(), timeout=10, what="the restart warning in the log")
        assert d.log().count(warned) == 1

        one = os.urandom(3000)
        (b / "one.bin").write_bytes(one)
        wait_for(lambda: versions_of(d, "h/b") == ["v1.0.0"], timeout=30, what="h/b v1.0.0")
        (b / "two.bin").write_bytes(os.urandom(3000))
        wait_for(lambda: versions_of(d, "h/b")[0] == "v1.1.0", timeout=30, what="h/b v1.1.0")
        # the writes went where status says: the old storage and registry
        assert objects_under(old_storage) and not objects_under(new_storage)
        assert not new_registry.exists()

        # a watch added by SIGHUP is a place revert may write into
        res = cpvctl(d.socket, "revert", "h/b", "v1.0", "--to", str(b / "restored"))
        assert res.returncode == 0, res.stderr
        assert (b / "restored" / "one.bin").read_bytes() == one

        # a SIGHUP back to the running values needs no restart any more
        d.storage_url = None
        d.write_config()
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(
            lambda: d.client().status()["daemon"]["restart_needed"] == [],
            what="nothing left to restart for",
        )
