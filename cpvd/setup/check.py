"""``cpvd check``: prove the config can work before the daemon runs on it.

Each check answers one question a user would otherwise discover hours later in a log
(is the bucket there, may I write to it, can I reach the Git remote, does the watched
directory exist) and says which key to fix. Checks never raise: every failure becomes a
``CheckResult`` so the user sees all problems at once.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cpvd.hooks.readiness as hook_readiness
from cpvd.config.model import Config, RegistryConfig, StorageConfig, WatchConfig
from cpvd.config.views import is_multi, registry_names, view
from cpvd.errors import CpvError, GitError
from cpvd.redact import mask_url
from cpvd.registry.git import registry_git_env as git_env

#: seconds before an S3 endpoint counts as unreachable
S3_CONNECT_TIMEOUT = 5.0
S3_READ_TIMEOUT = 10.0
#: one retry: a transient error should not fail the check, a dead endpoint should fail fast
S3_ATTEMPTS = 2
#: seconds for ``git ls-remote`` (SSH handshakes to hosted remotes take a few seconds)
GIT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


# ---------------------------------------------------------------- storage


def check_s3(storage: StorageConfig) -> CheckResult:
    """head-bucket with the client, profile, endpoint and region the daemon will use; a
    failure is told by the daemon's own translation (cpvd.storage.s3.s3_error)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from cpvd.storage.s3 import s3_client, s3_error

    name = "storage"
    try:
        client = s3_client(
            storage,
            connect_timeout=S3_CONNECT_TIMEOUT,
            read_timeout=S3_READ_TIMEOUT,
            attempts=S3_ATTEMPTS,
        )
        bucket, _ = storage.s3_bucket_prefix()
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError, ValueError) as exc:
        detail = s3_error(exc, storage, "check").message
        return CheckResult(name, False, f"{mask_url(storage.url)}: {detail}")
    where = f" via {mask_url(storage.endpoint_url)}" if storage.endpoint_url else ""
    return CheckResult(name, True, f"{mask_url(storage.url)}: bucket reachable{where}")


def check_local_storage(storage: StorageConfig) -> CheckResult:
    """The directory is created when missing (as the daemon would) and must be writable."""
    name = "storage"
    path = Path(storage.url).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return CheckResult(
            name,
            False,
            f"{path}: cannot create the storage directory ({exc.strerror or exc}); "
            "fix [storage] url or the permissions of its parent",
        )
    if not path.is_dir():
        return CheckResult(name, False, f"{path}: exists but is not a directory; fix [storage] url")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".cpv-check-"):
            pass
    except OSError as exc:
        return CheckResult(
            name,
            False,
            f"{path}: not writable ({exc.strerror or exc}); fix its permissions or [storage] url",
        )
    return CheckResult(name, True, f"{path}: local directory, writable")


def check_storage(storage: StorageConfig) -> CheckResult:
    return check_s3(storage) if storage.is_s3 else check_local_storage(storage)


# ---------------------------------------------------------------- git remote


def _first_error_line(stderr: str) -> str:
    """git's first ``fatal:``/``error:`` line: the cause, not the generic advice after it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith(("fatal:", "error:", "ssh:")):
            return line
    return lines[0] if lines else ""


def _explain_git_failure(stderr: str, registry: RegistryConfig) -> str:
    text = stderr.lower()
    if "permission denied" in text and "publickey" in text:
        return "the SSH key was refused; check [registry] ssh_key and the key's access rights"
    if "host key verification failed" in text:
        return (
            "the remote's SSH host key is not known; add it once with "
            "`ssh-keyscan HOST >> ~/.ssh/known_hosts`"
        )
    if any(w in text for w in ("failed to connect", "connection refused", "timed out")):
        return "the remote host is unreachable; check the network or fix [registry] remote"
    if "could not resolve" in text:
        return "the host name does not resolve; fix [registry] remote"
    if "does not appear to be a git repository" in text or "not found" in text:
        return "no Git repository there; fix [registry] remote (or create the repository)"
    if "authentication failed" in text or "terminal prompts disabled" in text:
        return "authentication needed; use an SSH remote with [registry] ssh_key"
    return "fix [registry] remote" + (" or [registry] ssh_key" if registry.ssh_key else "")


def check_git_remote(registry: RegistryConfig) -> CheckResult:
    """``git ls-remote`` with the daemon's environment, so SSH keys are tested too."""
    from cpvd.registry.git import run_git

    name = "git remote"
    remote = registry.remote or ""
    shown = mask_url(remote)
    if registry.ssh_key is not None and not os.access(registry.ssh_key, os.R_OK):
        detail = f"{registry.ssh_key}: SSH key missing or unreadable; fix [registry] ssh_key"
        return CheckResult(name, False, detail)
    try:
        proc = run_git(
            ["ls-remote", "--heads", remote],
            env=git_env(registry),
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except GitError as exc:
        detail = f"{shown}: {mask_url(exc.message)}; check [registry] remote"
        return CheckResult(name, False, detail)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        said = mask_url(_first_error_line(err)) or f"exit {proc.returncode}"
        return CheckResult(
            name, False, f"{shown}: {_explain_git_failure(err, registry)} (git: {said})"
        )
    return CheckResult(name, True, f"{shown}: reachable")


# ---------------------------------------------------------------- watches


def check_watch(index: int, watch: WatchConfig) -> CheckResult:
    """The watched directory must exist: a typo here would otherwise watch nothing, silently."""
    name = f"watch {watch.artifact}"
    p = watch.path
    if not p.exists():
        return CheckResult(
            name,
            False,
            f"{p} does not exist; create it (mkdir -p {shlex.quote(str(p))}) "
            f"or fix [[watch]] #{index} path",
        )
    if not p.is_dir():
        return CheckResult(name, False, f"{p} is not a directory; fix [[watch]] #{index} path")
    if not os.access(p, os.R_OK | os.X_OK):
        return CheckResult(name, False, f"{p} is not readable by this user; fix its permissions")
    return CheckResult(name, True, f"{p} ({watch.kind}{', polling' if watch.poll else ''})")


def run_checks(cfg: Config) -> list[CheckResult]:
    """Every check for ``cfg``, in the order a user would fix them."""
    results = []
    for name in registry_names(cfg):  # each registry, its storage and remote
        results += _registry_checks(view(cfg, name), name if is_multi(cfg) else None)
    results += [check_watch(i, w) for i, w in enumerate(cfg.watches, start=1)]
    for i, hook in enumerate(cfg.hooks, start=1):
        results.append(CheckResult(f"hook {hook.name}", *hook_readiness.hook_ready(i, hook)))
    return results


def _registry_checks(cfg: Config, label: str | None) -> list[CheckResult]:
    """Storage, remote and registry of one registry (``label``: its name, with several)."""
    results = [check_storage(cfg.storage)]
    if cfg.registry.remote:
        results.append(check_git_remote(cfg.registry))
    results.append(check_registry(cfg))
    if label is None:
        return results
    return [replace(r, name=f"{r.name} {label}") for r in results]


def check_registry(cfg: Config) -> CheckResult:
    """What ``cpvd run`` checks before it opens the registry (cpvd.registry.preflight): the
    storage the registry records is the config's, and a new remote shares its history."""
    from cpvd.registry.preflight import registry_problems
    from cpvd.storage import open_storage

    name = "registry"
    try:
        storage = open_storage(cfg.storage)
    except CpvError as exc:  # the storage check above says what is wrong
        return CheckResult(name, False, f"not checked: cannot open the storage ({exc.message})")
    try:
        problems = registry_problems(cfg, storage.dvc_remote_settings())
    finally:
        storage.close()
    if problems:
        return CheckResult(name, False, "\n      ".join(problems))
    path = Path(cfg.registry.path)
    if (path / ".git").exists():
        state = "exists"
    else:
        state = "will be cloned from the remote" if cfg.registry.remote else "will be created"
    return CheckResult(name, True, f"{path} ({state}), storage and remote match")


def format_results(results: list[CheckResult]) -> str:
    """One line per check, then a verdict line."""
    lines = [f"{'ok  ' if r.ok else 'FAIL'}  {r.name}: {r.detail}" for r in results]
    failed = sum(not r.ok for r in results)
    if failed:
        lines.append(f"{failed} check{'s' if failed > 1 else ''} failed")
    else:
        lines.append("all checks passed")
    return "\n".join(lines)
