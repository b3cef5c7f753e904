"""Where cpvctl looks for the daemon's socket, without importing platformdirs.

The daemon computes its default socket with ``platformdirs.user_runtime_dir("cpv")``
(``cpvd/config/paths.py``); the client must land on the very same path or ``cpvctl`` would report a
running daemon as missing. platformdirs is a third-party import the client may not pay for at
start-up, so this module reproduces its lookup (platformdirs 4.14, ``ensure_exists=False``,
``use_site_for_root=False``) for Linux and macOS with the standard library only. A test compares
the two under several environments, so a platformdirs upgrade that changes the answer fails CI
instead of silently splitting client and daemon.
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys

APP = "cpv"
SOCKET_NAME = "cpvd.sock"
_RUNTIME_DIR_MODE = 0o700
_MAX_SYMLINKS = 40


def default_socket() -> str:
    """``$CPV_SOCKET`` if set, else ``user_runtime_dir("cpv")/cpvd.sock``."""
    env = os.environ.get("CPV_SOCKET")
    if env:
        return env
    return posixpath.join(user_runtime_dir(APP), SOCKET_NAME)


def user_runtime_dir(app: str = APP) -> str:
    """What ``platformdirs.user_runtime_dir(app)`` returns on this machine (Linux or macOS)."""
    xdg = _xdg_dir("XDG_RUNTIME_DIR")
    if xdg is not None and _xdg_runtime_problem(xdg) is None:
        return os.path.join(xdg, app)
    if sys.platform == "darwin":
        return os.path.join(_expand_user("~/Library/Caches/TemporaryItems"), app)
    return os.path.join(_default_runtime_dir(), app)


# --- the pieces of platformdirs' unix.py / _xdg.py / _runtime.py / _paths.py it relies on ---


def _xdg_dir(env_var: str) -> str | None:
    path = os.environ.get(env_var, "")
    return path if posixpath.isabs(path) else None


def _xdg_runtime_problem(path: str) -> str | None:
    """platformdirs accepts $XDG_RUNTIME_DIR only if private (0700, ours) below trusted parents."""
    return _runtime_dir_problem(path, missing_ok=True) or _directory_problem(
        _parent(path), missing_ok=True
    )


def _default_runtime_dir() -> str:
    if sys.platform.startswith("openbsd"):
        path = f"/tmp/run/user/{os.geteuid()}"
    elif sys.platform.startswith(("freebsd", "netbsd")):
        path = f"/var/run/user/{os.geteuid()}"
    else:
        path = f"/run/user/{os.geteuid()}"
    problem = _runtime_dir_problem(path, missing_ok=False) or _directory_problem(
        _parent(path), missing_ok=False
    )
    return _temp_runtime_fallback() if problem else path


def _temp_runtime_fallback() -> str:
    """``<tempdir>/runtime-<euid>``: where platformdirs goes when /run/user/<uid> is unusable.

    platformdirs raises PermissionError when even that directory is untrustworthy; the client
    only needs the name to connect to, and a connect there fails with a clear message anyway.
    """
    import tempfile  # only on this fallback path: it pulls in random, shutil, ...

    temp = tempfile.gettempdir()
    roots = [
        value
        for name in ("TMPDIR", "TEMP", "TMP")
        if (value := os.environ.get(name, "")) and posixpath.isabs(value)
    ]
    roots.extend(("/tmp", "/var/tmp", "/usr/tmp"))
    if os.path.normpath(temp) not in {os.path.normpath(root) for root in roots}:
        for root in roots:
            try:
                with tempfile.TemporaryFile(dir=root):
                    temp = root
                    break
            except OSError:
                continue
    return posixpath.join(temp, f"runtime-{os.geteuid()}")


def _runtime_dir_problem(path: str, *, missing_ok: bool) -> str | None:
    try:
        info = os.lstat(_pure(path))
    except FileNotFoundError:
        return None if missing_ok else f"{path} is missing"
    except OSError as error:
        return f"{path} cannot be checked: {error.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != os.geteuid():
        return f"{path} is owned by uid {info.st_uid}"
    if info.st_mode & 0o777 != _RUNTIME_DIR_MODE:
        return f"{path} has mode {info.st_mode & 0o777:04o}"
    return None


def _directory_problem(path: str, *, missing_ok: bool) -> str | None:
    """Walk ``path`` from the root as platformdirs' "runtime" policy does: every component owned
    by root or us, a directory, and not group/other-writable unless sticky; symlinks followed."""
    try:
        _verify_path(os.path.abspath(path))
    except FileNotFoundError as error:
        return None if missing_ok else f"{error.filename} is missing"
    except PermissionError as error:
        return str(error)
    except OSError as error:
        return f"{error.filename} cannot be checked: {error.strerror}"
    return None


def _verify_path(path: str) -> None:
    owners = {0, os.geteuid()}
    writable = stat.S_IWGRP | stat.S_IWOTH
    directory = "/"
    pending = [p for p in path.split("/") if p]
    links = 0
    while pending:
        entry = posixpath.join(directory, pending.pop(0))
        info = os.lstat(entry)
        if info.st_uid not in owners:
            raise PermissionError(f"{entry}, owned by uid {info.st_uid}")
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise PermissionError(f"{entry}, which has too many symbolic links")
            target = os.readlink(entry)
            if posixpath.isabs(target):
                directory = "/"
            pending[:0] = [p for p in target.split("/") if p]
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise PermissionError(f"{entry}, which is not a directory")
        if info.st_mode & writable and not info.st_mode & stat.S_ISVTX:
            raise PermissionError(f"{entry}, writable by another user")
        directory = entry


def _pure(path: str) -> str:
    """``str(PurePosixPath(path))`` without pathlib: drop ``//`` and ``.``, keep ``..``."""
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts) if path.startswith("/") else "/".join(parts) or "."


def _parent(path: str) -> str:
    """``Path(path).parent`` for an absolute path."""
    return posixpath.dirname(_pure(path)) or "/"


def _expand_user(path: str) -> str:
    """Like platformdirs' expand_user: a relative $HOME counts as unset (falls back to pwd)."""
    home = os.environ.get("HOME")
    if home is not None and not posixpath.isabs(home):
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir.rstrip("/") + path[1:] or "/"
    return os.path.expanduser(path)
