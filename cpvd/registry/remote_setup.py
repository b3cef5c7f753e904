"""Giving an existing local registry the Git remote its config now names.

A registry starts local (the demo) and later gains ``[registry] remote``. Before this, the
directory was kept as it was and every push failed with "'origin' does not appear to be a
git repository" while ``cpvd check`` said the remote was reachable. Now the remote is set
up (``origin``, its branch fetched) and the pusher sends the whole history, unless the
remote holds a history that shares no commit with the registry's: mixing two registries
would renumber or clash with versions someone else relies on, so that is refused.

``remote_problem`` is what ``cpvd check`` and ``cpvd run`` both ask; an unreachable remote
is not a problem here (``check`` reports it from ``ls-remote``, ``run`` retries pushes).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cpvd.config.model import RegistryConfig
from cpvd.errors import GitError
from cpvd.redact import mask_url
from cpvd.registry.git import registry_git_env, run_git

log = logging.getLogger(__name__)

BRANCH = "main"
REMOTE = "origin"
TIMEOUT = 600.0


def _has_head(path: Path) -> bool:
    if not (path / ".git").exists():
        return False
    return run_git(["rev-parse", "--verify", "-q", "HEAD"], path, check=False).returncode == 0


def _remote_heads(path: Path, cfg: RegistryConfig) -> dict[str, str] | None:
    """Branch name -> commit on the remote; None when it cannot be reached."""
    assert cfg.remote
    try:
        proc = run_git(
            ["ls-remote", "--heads", cfg.remote],
            path,
            env=registry_git_env(cfg),
            timeout=TIMEOUT,
        )
    except GitError:
        return None
    heads: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        heads[ref.removeprefix("refs/heads/")] = sha.strip()
    return heads


def related(path: Path, rev: str) -> bool:
    """Whether ``rev`` (a commit we have) and HEAD share a commit."""
    base = run_git(["merge-base", "HEAD", rev], path, check=False)
    return base.returncode == 0 and bool(base.stdout.strip())


def _shares_history(path: Path, cfg: RegistryConfig, remote_head: str) -> bool | None:
    """Whether the remote's branch and our HEAD have a common commit (None: unknown)."""
    known = run_git(["cat-file", "-e", f"{remote_head}^{{commit}}"], path, check=False)
    if known.returncode != 0:
        assert cfg.remote
        try:  # into FETCH_HEAD only: no ref of ours changes
            run_git(
                ["fetch", "-q", "--no-tags", cfg.remote, f"refs/heads/{BRANCH}"],
                path,
                env=registry_git_env(cfg),
                timeout=TIMEOUT,
            )
        except GitError:
            return None
    return related(path, remote_head)


def remote_problem(cfg: RegistryConfig) -> str | None:
    """Why the registry at ``cfg.path`` cannot use ``cfg.remote``, or None.

    Only an existing registry with commits can clash; a missing one is cloned from the
    remote. An empty remote receives the history; one with our history (or ahead of it)
    is the normal case. Refused: a remote whose ``main`` shares no commit with ours, or one
    with branches but no ``main`` (cpvd pushes ``main``).
    """
    path = Path(cfg.path)
    if not cfg.remote or not _has_head(path):
        return None
    heads = _remote_heads(path, cfg)
    if not heads:
        return None
    shown = mask_url(cfg.remote)
    if BRANCH not in heads:
        return (
            f"the Git remote {shown} has branches ({', '.join(sorted(heads))}) but no "
            f"'{BRANCH}', the branch cpvd pushes; give [registry] remote an empty repository"
        )
    if _shares_history(path, cfg, heads[BRANCH]) is False:
        return (
            f"the Git remote {shown} holds a history unrelated to the registry {path} "
            "(no commit in common), so cpvd will not push into it: set [registry] remote to an "
            "empty repository to publish this registry there, or move the registry directory "
            "aside to start from a clone of that remote (this registry's versions stay in the "
            "moved directory)"
        )
    return None


def _origin_url(path: Path) -> str | None:
    current = run_git(["remote", "get-url", REMOTE], path, check=False)
    return current.stdout.decode(errors="replace").strip() if current.returncode == 0 else None


def needs_attach(cfg: RegistryConfig) -> bool:
    """Whether an existing registry's ``origin`` is missing or another URL than the config's."""
    path = Path(cfg.path)
    if not cfg.remote or not (path / ".git").exists():
        return False
    return _origin_url(path) != cfg.remote


def attach_remote(cfg: RegistryConfig) -> None:
    """Make ``origin`` of the registry at ``cfg.path`` be ``cfg.remote`` and fetch it, so
    the pusher sends the whole history. The caller has asked :func:`remote_problem` first."""
    path = Path(cfg.path)
    assert cfg.remote
    if _origin_url(path) is None:
        run_git(["remote", "add", REMOTE, cfg.remote], path)
    else:
        run_git(["remote", "set-url", REMOTE, cfg.remote], path)
        run_git(["update-ref", "-d", f"refs/remotes/{REMOTE}/{BRANCH}"], path, check=False)
    try:
        run_git(["fetch", "-q", "--no-tags", REMOTE], path, env=registry_git_env(cfg),
                timeout=TIMEOUT)  # fmt: skip
    except GitError as exc:  # unreachable now: the pusher retries
        log.warning("registry remote %s set up but not reachable yet: %s", mask_url(cfg.remote),
                    exc.message)  # fmt: skip
    log.info("registry remote set to %s; its history will be pushed", mask_url(cfg.remote))
