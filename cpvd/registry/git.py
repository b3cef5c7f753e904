"""The one place where cpvd spawns processes (git).

Argv is built by pure functions elsewhere and passed here as a list; nothing goes through a
shell. Every call has a timeout, and the environment is pinned so git never prompts, never
pages and never asks for a password on a terminal.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from cpvd.config.model import RegistryConfig
from cpvd.errors import GitError
from cpvd.redact import mask_url

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0

_BASE_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "GIT_ASKPASS": "true",
    "LC_ALL": "C",
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
}


def registry_git_env(cfg: RegistryConfig) -> dict[str, str]:
    """Environment variables to *add* for git talking to this registry's remote.

    With an ``ssh_key`` the key is used alone and ssh never prompts, so a daemon fails fast
    instead of hanging on a passphrase; a first-seen host key is accepted and pinned
    (``accept-new``), which is what an unattended service needs on its first push.
    """
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if cfg.ssh_key is not None:
        key = shlex.quote(os.path.expanduser(str(cfg.ssh_key)))
        env["GIT_SSH_COMMAND"] = (
            f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o StrictHostKeyChecking=accept-new"
        )
    return env


#: variables that would point git at another repository than the one it runs in
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE")


def git_env(extra: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """The environment git runs in. With ``cwd``, git may not look for a repository above
    ``cwd``: a registry whose ``.git`` went missing must fail, not commit and tag in an
    enclosing repository (a home directory under version control, a project checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    env.update(_BASE_ENV)
    if cwd is not None:
        env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(os.path.realpath(cwd))
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    cwd: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <args>`` and return the completed process.

    Raises GitError (retryable) on timeout, and on a non-zero exit when ``check`` is set;
    the message carries git's own stderr so the user sees what git said, with any
    ``user:token@`` in a URL masked (git echoes remote URLs in its errors).
    """
    # git's own "maintenance run --auto" after every commit and fetch is one more process
    # per version, waited for; cpvd runs it itself, once every MAINTAIN_EVERY commits
    argv = ["git", "-c", "maintenance.auto=false", *args]
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=git_env(env, cwd),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"`git {args[0]}` timed out after {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise GitError("git is not installed (no `git` on PATH)") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(
            mask_url(f"`git {' '.join(args[:2])}` failed (exit {proc.returncode}): {err}")
        )
    return proc


def git_out(args: Sequence[str], cwd: Path | None = None, **kw: object) -> str:
    """stdout of a successful git command, decoded and stripped."""
    return run_git(args, cwd, **kw).stdout.decode().strip()  # type: ignore[arg-type]
