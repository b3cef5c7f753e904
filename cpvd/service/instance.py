"""Single-instance lock, socket-directory checks and clean-up of stale locks after a crash.

Why an flock: it dies with its process, so a ``kill -9`` never leaves a lock that blocks the
next start (no pid-file guessing), and a second daemon learns at once which pid holds it.
Everything that deletes something another process might own (a socket, Git's and DVC's lock
files) is only safe while this lock is held: then no other cpvd can be using them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType

from cpvd.errors import StateError

LOCK_NAME = "cpvd.lock"
#: sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL
MAX_SOCKET_PATH = 103 if os.uname().sysname == "Darwin" else 107


class InstanceLock:
    """An exclusive, non-blocking flock on ``state_dir/cpvd.lock`` holding our pid.

    The file is never deleted: removing an flock'd file lets a later process lock a fresh
    inode while an old holder still has the old one.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateError` naming the pid that holds it."""
        if self._fd is not None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # os.open fds are close-on-exec: git/dvc subprocesses never inherit the lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot create the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise StateError(
                f"another cpvd ({who}) is running with state dir {self.state_dir}"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(
                f"cannot lock {self.path}: {exc} (is state_dir on a filesystem without locks?)"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot write {self.path}: {exc}") from exc
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent). The pid is cleared first so nobody reads a stale one."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last fd releases the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The holder's pid; it writes it just after locking, so allow it a moment."""
    for _ in range(5):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(0.02)
    return None


def prepare_socket_dir(socket_path: Path) -> None:
    """Make sure the socket's directory is private to us, creating it 0700 when missing.

    An existing directory must be ours and not writable by group or others: otherwise
    another user could replace the socket with their own and read clients' requests.
    """
    socket_path = Path(socket_path)
    size = len(os.fsencode(str(socket_path)))
    if size > MAX_SOCKET_PATH:
        raise StateError(
            f"socket path {socket_path} is {size} bytes, longer than the {MAX_SOCKET_PATH} "
            "a Unix socket allows: set [daemon] socket (or CPV_SOCKET) to a shorter path"
        )
    parent = socket_path.parent
    try:
        st = os.stat(parent)
    except FileNotFoundError:
        try:
            parent.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(parent, 0o700)
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
            return
        except FileExistsError:
            st = os.stat(parent)  # created meanwhile by someone else: check it below
        except OSError as exc:
            raise StateError(f"cannot create the socket directory {parent}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"the socket directory {parent} exists but is not a directory")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise StateError(
            f"the socket directory {parent} belongs to uid {st.st_uid}, not to cpvd's user "
            f"(uid {uid}): another user could replace the socket. Use a directory you own "
            "(set [daemon] socket or CPV_SOCKET), or fix it with "
            f"`sudo chown {uid} {parent} && chmod 700 {parent}`"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise StateError(
            f"the socket directory {parent} is writable by group or others (mode {mode:04o}): "
            f"another user could replace the socket. Fix it with `chmod 700 {parent}`"
        )


def clear_stale_socket(socket_path: Path, timeout: float = 1.0) -> bool:
    """Remove a socket file nobody answers on; True when one was removed.

    Call only while holding :class:`InstanceLock`. A live socket (another daemon, perhaps
    on another state dir) is never touched; neither is a file that is not a socket.
    """
    socket_path = Path(socket_path)
    try:
        st = os.lstat(socket_path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise StateError(
            f"{socket_path} exists and is not a socket: move it away or set another "
            "socket path ([daemon] socket or CPV_SOCKET)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(socket_path))
    except ConnectionRefusedError:
        pass  # nobody listens: left behind by a crash
    except FileNotFoundError:
        return False
    except OSError as exc:  # timeout (a hung listener) or permission: not ours to remove
        raise StateError(
            f"cannot tell whether a process serves {socket_path} ({exc}); "
            "stop it or remove the socket by hand"
        ) from exc
    else:
        raise StateError(
            f"a process is already answering on {socket_path}: stop it (`cpvctl status` "
            "shows which daemon) or give this one another socket path"
        )
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    return True


def _git_dir(repo: Path) -> Path | None:
    dot_git = repo / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            return target if target.is_absolute() else (repo / target)
    return None


def _remove_if_unlocked(path: Path) -> bool:
    """Remove a DVC flock'd lock file unless a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a running dvc holds it
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def clear_stale_git_locks(repo: Path) -> list[Path]:
    """Remove Git and DVC lock files a killed process left in ``repo``; return them.

    Git: every ``<gitdir>/*.lock`` (index, HEAD, packed-refs, config, ORIG_HEAD...) and
    ``refs/**/*.lock`` (no valid ref name ends in ``.lock``). Git's locks are O_EXCL files
    that say nothing about their owner, so this must only run while holding
    :class:`InstanceLock`, before the daemon's own Git work starts; a person running git by
    hand in the registry at that moment is not detected.
    DVC: ``.dvc/tmp/lock`` and ``rwlock.lock`` are flocks, removed only when free;
    ``.dvc/tmp/rwlock`` (pid records) only when DVC's repo lock is free.
    """
    repo = Path(repo)
    removed: list[Path] = []
    git_dir = _git_dir(repo)
    if git_dir is not None:
        candidates = [p for p in git_dir.glob("*.lock")]
        refs = git_dir / "refs"
        if refs.is_dir():
            candidates.extend(refs.rglob("*.lock"))
        for path in sorted(candidates):
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    dvc_tmp = repo / ".dvc" / "tmp"
    repo_lock = dvc_tmp / "lock"
    if repo_lock.exists():
        if not _remove_if_unlocked(repo_lock):
            return removed  # a live dvc works here: leave all its files alone
        removed.append(repo_lock)
    rw_guard = dvc_tmp / "rwlock.lock"
    guard_free = True
    if rw_guard.exists():
        guard_free = _remove_if_unlocked(rw_guard)
        if guard_free:
            removed.append(rw_guard)
    rwlock = dvc_tmp / "rwlock"
    if guard_free and rwlock.is_file():
        rwlock.unlink(missing_ok=True)
        removed.append(rwlock)
    return removed
