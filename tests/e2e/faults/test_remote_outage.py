"""Case 5: the Git remote is unreachable, or rejects every push, for a while.

Versions are still made and kept locally; ``cpvctl status`` says how many wait to be pushed;
when the remote is back they are pushed, and nothing is versioned twice.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.faults.checks import assert_registry_sound
from tests.e2e.faults.conftest import settled
from tests.e2e.harness import DaemonProcess, Watch, tags, wait_for

ARTIFACT = "vision/vit"

REJECT = "#!/bin/sh\necho 'cpv-test: pushes are closed for maintenance' >&2\nexit 1\n"


def drop(ck: Path, name: str) -> tuple[str, str]:
    data = name.encode() + os.urandom(3000)
    (ck / name).write_bytes(data)
    return hashlib.md5(data).hexdigest(), ARTIFACT


def registry_status(d: DaemonProcess) -> dict[str, object]:
    return d.client().status()["registry"]


@pytest.mark.parametrize("fault", ["unreachable", "rejecting", "locked"])
def test_versions_wait_locally_and_are_pushed_when_the_remote_returns(
    fault: str,
    short_tmp: Path,
    bare_remote: Path,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], remote=bare_remote)
    hook = bare_remote / "hooks" / "pre-receive"
    away = bare_remote.with_name("remote-away.git")
    with d:
        expected = dict([drop(ck, "e0.bin")])
        wait_for(lambda: settled(d, bare_remote, expected), what="first version pushed")
        lock = bare_remote / "refs" / "heads" / "main.lock"
        if fault == "unreachable":
            bare_remote.rename(away)
        elif fault == "locked":  # what a receive-pack killed mid-push leaves
            lock.write_text("")
        else:
            hook.write_text(REJECT)
            hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
        for i in range(1, 4):
            expected.update([drop(ck, f"e{i}.bin")])
            wait_for(lambda n=i: len(d.client().versions(ARTIFACT)) == n + 1, what=f"local v{i}")
        st = wait_for(
            lambda: (s := registry_status(d))["unpushed"] == 3 and s,
            what="status counting 3 unpushed",
        )
        assert st["reachable"] is False and st["error"], st
        if fault == "rejecting":
            assert "closed for maintenance" in str(st["error"])
        if fault == "locked":
            assert str(lock) in str(st["error"]), st
        remote_now = away if fault == "unreachable" else bare_remote
        assert len(tags(remote_now)) == 1  # nothing reached the remote
        # a restart while the remote is down keeps them and counts them again
        d.stop()
        d.start()
        wait_for(lambda: registry_status(d)["unpushed"] == 3, what="unpushed after restart")
        if fault == "unreachable":
            away.rename(bare_remote)
        elif fault == "locked":
            lock.unlink()
        else:
            hook.unlink()
        wait_for(lambda: settled(d, bare_remote, expected), timeout=90, what="pushed")
        st = registry_status(d)
        assert st["reachable"] is True and st["unpushed"] == 0, st
    report = assert_registry_sound(bare_remote, expected, local_clones=(d.registry,))
    assert sorted(v.version for v in report.versions) == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
