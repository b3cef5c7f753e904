"""Single-instance lock, socket directory rules, stale socket and lock-file clean-up."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.errors import StateError
from cpvd.service.instance import (
    InstanceLock,
    clear_stale_git_locks,
    clear_stale_socket,
    prepare_socket_dir,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def holder(short_tmp: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the instance lock on short_tmp/state until killed."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from cpvd.service.instance import InstanceLock
        lock = InstanceLock(Path({str(short_tmp / "state")!r}))
        lock.acquire()
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_lock_held_by_another_process(short_tmp: Path, holder: subprocess.Popen[str]) -> None:
    state = short_tmp / "state"
    lock = InstanceLock(state)
    with pytest.raises(StateError) as info:
        lock.acquire()
    assert (
        info.value.message == f"another cpvd (pid {holder.pid}) is running with state dir {state}"
    )
    assert not lock.held

    holder.kill()  # the flock dies with its process: no stale lock to clean up
    holder.wait(timeout=10)
    lock.acquire()
    try:
        assert lock.held
        assert (state / "cpvd.lock").read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
    assert (state / "cpvd.lock").read_text() == ""  # no stale pid after a clean stop


def test_second_lock_in_same_process_and_context_manager(short_tmp: Path) -> None:
    state = short_tmp / "deep" / "state"
    with InstanceLock(state) as first:
        assert first.held and (state.stat().st_mode & 0o777) == 0o700
        with pytest.raises(StateError, match=f"pid {os.getpid()}"):
            InstanceLock(state).acquire()
        first.acquire()  # idempotent for the holder
    assert not first.held
    with InstanceLock(state):
        pass


def test_lock_is_not_inherited_by_child_processes(short_tmp: Path) -> None:
    """git/dvc subprocesses must not keep the lock alive after the daemon is gone."""
    lock = InstanceLock(short_tmp)
    lock.acquire()
    # close_fds=False: only close-on-exec keeps the lock fd out of the child
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        close_fds=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until the child runs: with vfork the parent resumes before exec has closed
        # the close-on-exec descriptors
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        lock.release()
        other = InstanceLock(short_tmp)
        other.acquire()  # would fail if the child had inherited the locked fd
        other.release()
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout:
            child.stdout.close()


def test_prepare_socket_dir_creates_0700_despite_umask(short_tmp: Path) -> None:
    sock = short_tmp / "run" / "cpv" / "cpvd.sock"
    old = os.umask(0)
    try:
        prepare_socket_dir(sock)
    finally:
        os.umask(old)
    assert (sock.parent.stat().st_mode & 0o777) == 0o700
    prepare_socket_dir(sock)  # an existing good directory is accepted


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_prepare_socket_dir_refuses_writable_by_others(short_tmp: Path, mode: int) -> None:
    d = short_tmp / "shared"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(StateError) as info:
        prepare_socket_dir(d / "cpvd.sock")
    assert "writable by group or others" in info.value.message
    assert f"chmod 700 {d}" in info.value.message
    os.chmod(d, 0o755)
    prepare_socket_dir(d / "cpvd.sock")  # read-only for others is allowed


def test_prepare_socket_dir_refuses_foreign_owner(short_tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    d = short_tmp / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534, not to cpvd's user"):
        prepare_socket_dir(d / "cpvd.sock")


def test_prepare_socket_dir_other_errors(short_tmp: Path) -> None:
    (short_tmp / "afile").write_text("x")
    with pytest.raises(StateError, match="not a directory"):
        prepare_socket_dir(short_tmp / "afile" / "cpvd.sock")
    with pytest.raises(StateError, match="shorter path"):
        prepare_socket_dir(short_tmp / ("x" * 120) / "cpvd.sock")
    assert not (short_tmp / ("x" * 120)).exists()


def test_clear_stale_socket(short_tmp: Path) -> None:
    path = short_tmp / "cpvd.sock"
    assert clear_stale_socket(path) is False

    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live.bind(str(path))
        live.listen(1)
        with pytest.raises(StateError, match="already answering"):
            clear_stale_socket(path)
        assert path.exists()
    finally:
        live.close()  # closing leaves the file: exactly what a crashed daemon leaves
    assert path.exists()
    assert clear_stale_socket(path) is True
    assert not path.exists()

    path.write_text("not a socket")
    with pytest.raises(StateError, match="not a socket"):
        clear_stale_socket(path)
    assert path.read_text() == "not a socket"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def test_clear_stale_git_and_dvc_locks(short_tmp: Path) -> None:
    repo = short_tmp / "registry"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a")
    assert _git(repo, "add", "a.txt").returncode == 0
    assert _git(repo, "commit", "-qm", "one").returncode == 0
    git = repo / ".git"
    stale = [
        git / "index.lock",
        git / "HEAD.lock",
        git / "packed-refs.lock",
        git / "refs" / "heads" / "master.lock",
        git / "refs" / "tags" / "vision" / "resnet50@v1.0.0.lock",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    dvc_tmp = repo / ".dvc" / "tmp"
    dvc_tmp.mkdir(parents=True)
    for name in ("lock", "rwlock.lock"):
        (dvc_tmp / name).write_text(" 12345\n")
    (dvc_tmp / "rwlock").write_text('{"write": {}, "read": {}}')
    (repo / "b.txt").write_text("b")
    failed = _git(repo, "add", "b.txt")
    assert failed.returncode != 0 and "index.lock" in failed.stderr  # what a kill leaves

    removed = clear_stale_git_locks(repo)
    expected = {*stale, dvc_tmp / "lock", dvc_tmp / "rwlock.lock", dvc_tmp / "rwlock"}
    assert set(removed) == expected and len(removed) == len(expected)
    assert not any(p.exists() for p in expected)
    assert _git(repo, "add", "b.txt").returncode == 0
    assert _git(repo, "commit", "-qm", "two").returncode == 0
    assert clear_stale_git_locks(repo) == []


def test_live_dvc_lock_is_left_alone(short_tmp: Path) -> None:
    repo = short_tmp / "registry"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    dvc_tmp = repo / ".dvc" / "tmp"
    dvc_tmp.mkdir(parents=True)
    (dvc_tmp / "rwlock").write_text("{}")
    (repo / ".git" / "index.lock").write_text("")
    fd = os.open(dvc_tmp / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `dvc` holds it
        removed = clear_stale_git_locks(repo)
        assert removed == [repo / ".git" / "index.lock"]
        assert (dvc_tmp / "lock").exists() and (dvc_tmp / "rwlock").exists()
    finally:
        os.close(fd)
    assert set(clear_stale_git_locks(repo)) == {dvc_tmp / "lock", dvc_tmp / "rwlock"}


def test_no_git_dir_is_fine(short_tmp: Path) -> None:
    assert clear_stale_git_locks(short_tmp) == []
