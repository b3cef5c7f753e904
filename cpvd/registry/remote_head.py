"""Make a fresh ``git clone`` of the registry remote check out the registry.

A bare remote made with plain ``git init --bare`` has ``HEAD -> refs/heads/master`` (or
whatever ``init.defaultBranch`` says) while CPV pushes ``main``: a clone then warns "remote
HEAD refers to nonexistent ref" and checks out nothing. Hosting services point HEAD at the
first pushed branch themselves; a bare repository does not. So after the first successful
push, cpvd looks at the remote's HEAD once: a remote on this machine gets its HEAD set to
the branch CPV pushes (only when HEAD names a branch that does not exist there); for any
other remote the log says how to fix it on the server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cpvd.errors import GitError
from cpvd.redact import mask_url
from cpvd.registry.git import git_out, run_git

log = logging.getLogger(__name__)


def local_remote_dir(url: str) -> Path | None:
    """The directory of a remote on this machine (``/srv/reg.git``, ``file:///srv/reg.git``),
    or None for a network remote (``git@host:path``, ``ssh://``, ``https://``)."""
    path = url.removeprefix("file://") if url.startswith("file://") else url
    if not os.path.isabs(path):
        return None
    return Path(path) if Path(path).is_dir() else None


def remote_head_resolves(repo: Path, remote: str, env: dict[str, str]) -> bool:
    """Whether the remote's HEAD names a branch it has (``ls-remote`` lists HEAD only then)."""
    out = git_out(["ls-remote", remote, "HEAD"], repo, env=env, timeout=120)
    return bool(out.strip())


def ensure_remote_head(repo: Path, remote: str, url: str, branch: str, env: dict[str, str]) -> None:
    """Point a dangling remote HEAD at ``branch`` (local remotes) or say how (others).

    Never fails the push that preceded it: any problem is logged.
    """
    try:
        if remote_head_resolves(repo, remote, env):
            return
        bare = local_remote_dir(url)
        if bare is None:
            log.warning(
                "the registry remote %s has no default branch (HEAD names a branch cpvd does "
                "not push), so a fresh clone checks out nothing; make %r its default branch "
                "(on a plain Git server: git symbolic-ref HEAD refs/heads/%s in the bare repo)",
                mask_url(url),
                branch,
                branch,
            )
            return
        run_git(["--git-dir", str(bare), "symbolic-ref", "HEAD", f"refs/heads/{branch}"], repo)
        log.info("set the registry remote's HEAD to %s, so a fresh clone checks it out", branch)
    except (GitError, OSError) as exc:
        log.warning("could not check the registry remote's HEAD: %s", exc)
