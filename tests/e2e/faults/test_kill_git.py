"""Case 3: a ``kill -9`` during a Git commit leaves ``index.lock`` / a ref lock behind.

Every later commit would fail until they are removed; the daemon clears them at start-up,
only while it holds its single-instance lock, and carries on.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.faults.checks import assert_registry_sound
from tests.e2e.faults.conftest import settled
from tests.e2e.harness import DaemonProcess, Watch, git, wait_for

ARTIFACT = "team/llm"

# runs inside `git commit` while it holds HEAD's and the branch's ref locks
HOOK = """#!/bin/sh
if [ "$1" = prepared ] && grep -q ' refs/heads/main$' ; then
    touch "{marker}"
    sleep 30
fi
exit 0
"""


def drop(ck: Path, name: str, data: bytes) -> str:
    (ck / name).write_bytes(data)
    return hashlib.md5(data).hexdigest()


def test_stale_locks_from_a_stopped_daemon_are_cleared(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], remote=bare_remote)
    expected = {}
    with d:
        expected[drop(ck, "a.bin", b"a" * 4000)] = ARTIFACT
        wait_for(lambda: settled(d, bare_remote, expected), what="first version")
    gitdir = d.registry / ".git"
    for lock in ("index.lock", "HEAD.lock", "refs/heads/main.lock"):
        (gitdir / lock).write_text("")
    # git itself now refuses to commit in the registry: the locks are real obstacles
    proc = subprocess.run(
        ["git", "commit", "--allow-empty", "-m", "x"], cwd=d.registry, capture_output=True
    )
    assert proc.returncode != 0 and b".lock" in proc.stderr
    with d:
        expected[drop(ck, "b.bin", b"b" * 4000)] = ARTIFACT
        wait_for(lambda: settled(d, bare_remote, expected), what="version after the restart")
        assert [v["version"] for v in d.client().versions(ARTIFACT)] == ["v1.1.0", "v1.0.0"]
    assert not list(gitdir.glob("*.lock")) and not (gitdir / "refs/heads/main.lock").exists()
    assert "removed stale lock files" in d.log_path.read_text()
    assert_registry_sound(bare_remote, expected, local_clones=(d.registry,))


def test_kill_during_a_real_commit(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A reference-transaction hook holds `git commit` between locking and updating the
    branch, so the kill lands inside a real commit, every time."""
    ck = short_tmp / "ck"
    marker = short_tmp / "in-commit"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], remote=bare_remote)
    expected = {}
    with d:
        expected[drop(ck, "a.bin", b"a" * 4000)] = ARTIFACT
        wait_for(lambda: settled(d, bare_remote, expected), what="first version")
        hook = d.registry / ".git" / "hooks" / "reference-transaction"
        hook.write_text(HOOK.format(marker=marker))
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
        expected[drop(ck, "b.bin", b"b" * 4000)] = ARTIFACT
        wait_for(marker.exists, what="the daemon inside git commit")
        d.kill()
    gitdir = d.registry / ".git"
    left = sorted(str(p.relative_to(gitdir)) for p in gitdir.rglob("*.lock"))
    # `git commit -F -` after a separate `git add` holds the ref locks, not index.lock
    assert "refs/heads/main.lock" in left or "HEAD.lock" in left, left
    hook.unlink()
    time.sleep(0.1)
    with d:
        wait_for(lambda: settled(d, bare_remote, expected), what="the interrupted version")
        expected[drop(ck, "c.bin", os.urandom(3000))] = ARTIFACT
        wait_for(lambda: settled(d, bare_remote, expected), what="the next version")
        assert [v["version"] for v in d.client().versions(ARTIFACT)] == [
            "v1.2.0", "v1.1.0", "v1.0.0"
        ]  # fmt: skip
    assert not list(gitdir.rglob("*.lock"))
    assert git(d.registry, "status", "--porcelain") == ""
    assert_registry_sound(bare_remote, expected, local_clones=(d.registry,))
