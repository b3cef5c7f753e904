"""The Git + DVC registry: layout, pointers, commits, tags, and pushing to the team remote.

Layout (what a colleague sees after ``git clone``)::

    dvc.yaml                              artifacts: one entry per artifact
    .dvc/config                           the DVC remote (no secrets)
    artifacts/<team>/<model>/checkpoint.dvc   the artifact's one pointer, updated per version
    artifacts/<team>/<model>/.gitignore       ignores the pulled bytes

Every version is one commit (GTO allows one version of an artifact per commit) carrying a
``Cpv-Job`` trailer, so a step re-run after a crash finds its commit instead of making a
second one. Git runs as a subprocess through ``cpvd.registry.git`` only.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cpvd.config.model import RegistryConfig
from cpvd.errors import GitError, StateError
from cpvd.redact import mask_url
from cpvd.registry.binding import RECORD, storage_files
from cpvd.registry.dvcfiles import (
    POINTER_STEM,
    Pointer,
    artifact_dir,
    parse_dvc_yaml,
    parse_pointer,
    pointer_file,
    refuse_overlaps,
    render_dvc_yaml,
    render_pointer,
)
from cpvd.registry.git import git_out, registry_git_env, run_git
from cpvd.registry.readme import current_readme
from cpvd.registry.remote_head import ensure_remote_head
from cpvd.registry.worktree import put_back, set_aside

log = logging.getLogger(__name__)

BRANCH = "main"
REMOTE = "origin"
#: commits between two ``git maintenance run --auto`` (git's own after every commit is off)
MAINTAIN_EVERY = 100

#: reasons git gives when the remote moved on meanwhile (another machine pushed): fetch,
#: replay, retry. Any other refusal (a hook, a protected branch) would refuse a replay too.
_RACE_REASONS = re.compile(
    r"fetch first|non-fast-forward|already exists|stale info|cannot lock ref"
    r"|failed to update ref|incorrect old value|atomic transaction failed",
    re.I,
)
_REFUSED_LINE = re.compile(
    r"^\s*!\s.*?\[(?:remote )?rejected\][^(\n]*\((?P<reason>[^\n]*)\)\s*$", re.M
)


_LOCK_HELD = re.compile(r"Unable to create '(?P<path>[^']+\.lock)': File exists")


def remote_lock_of(text: str) -> str | None:
    """The lock file the remote could not create (``.../refs/heads/main.lock``), if any."""
    m = _LOCK_HELD.search(text)
    return os.path.normpath(m["path"]) if m else None


def push_failure_kind(text: str) -> str:
    """``"race"``, ``"refused"``, ``"locked"`` or ``"error"`` for a failed ``git push``.

    ``locked``: the remote holds a lock file; another push is running there, or one was
    killed (a ``kill -9`` of our process group also kills ``git receive-pack`` when the
    remote is a local path) and left it. Replaying cannot help; waiting may.

    Judged on the per-ref verdicts (``--porcelain`` lines, or the human ``! [rejected]``
    form), never on free text: an atomic push refused by a hook also prints "atomic push
    failed", which says nothing about why.
    """
    reasons = [m["reason"] for m in _REFUSED_LINE.finditer(text)]
    if not reasons:
        return "error"
    if remote_lock_of(text):
        return "locked"
    if any(_RACE_REASONS.search(r) for r in reasons):
        return "race"
    return "refused"


#: ``git commit``'s summary line: ``[main 0123…] message`` or ``[main (root-commit) 0123…] …``
_COMMIT_SUMMARY = re.compile(rb"^\[[^\n\]]*?\b([0-9a-f]{40})\] ")
_UNKNOWN_PATH = b"did not match any file(s) known to git"


class RegistryRepo:
    """The registry's Git + DVC working tree, a local clone of the team remote.

    Owns every git command the engine runs on the registry and the files in its work tree;
    knows nothing of versions beyond the trailers and tags it is asked to write. Not
    thread-safe: the daemon gives it one worker thread.
    """

    def __init__(self, cfg: RegistryConfig, remote_settings: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.remote_settings = dict(remote_settings)
        self._env = registry_git_env(cfg)
        #: where :meth:`reset_worktree` moves uncommitted edits (the engine sets it to the
        #: state dir's ``backups``); None discards them
        self.backups: Path | None = None
        self._written: list[str] | None = None  # paths written inside :meth:`unchanged_on_failure`
        self._head_checked = False  # see cpvd.registry.remote_head
        self._commits = 0  # made by this process: every MAINTAIN_EVERY, a maintenance run

    # -- git plumbing -------------------------------------------------------------------
    def git(self, *args: str, check: bool = True, input: bytes | None = None) -> str:
        return run_git(
            list(args), self.path, env=self._env, check=check, input=input
        ).stdout.decode()

    def head(self) -> str | None:
        proc = run_git(["rev-parse", "--verify", "-q", "HEAD"], self.path, check=False)
        return proc.stdout.decode().strip() or None

    def read_file(self, rel: str, rev: str = "HEAD") -> str | None:
        proc = run_git(["show", f"{rev}:{rel}"], self.path, check=False)
        return proc.stdout.decode() if proc.returncode == 0 else None

    # -- creation -----------------------------------------------------------------------
    def open(self, artifacts: Mapping[str, str]) -> None:
        """Clone or create the registry, then make sure config and ``dvc.yaml`` are current."""
        if not (self.path / ".git").exists():
            if self.path.is_dir() and any(self.path.iterdir()):
                raise StateError(
                    f"the registry {self.path} is not a git repository: restore its .git or "
                    "move the directory aside (cpvd clones or creates a registry only in an "
                    "empty or missing directory)"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.cfg.remote:
                self._clone()
            else:
                run_git(["init", "-q", "-b", BRANCH, str(self.path)])
        self._configure_identity()
        self.ensure_layout(artifacts, message="cpv: registry layout")

    def _clone(self) -> None:
        assert self.cfg.remote
        run_git(
            ["clone", "-q", "--origin", REMOTE, self.cfg.remote, str(self.path)],
            env=self._env,
            timeout=600,
        )
        if self.head() is None:  # an empty remote: start the branch ourselves
            run_git(["symbolic-ref", "HEAD", f"refs/heads/{BRANCH}"], self.path)

    def _configure_identity(self) -> None:
        for key, value in (("user.name", "cpvd"), ("user.email", f"cpvd@{socket.gethostname()}")):
            if run_git(["config", key], self.path, check=False).returncode != 0:
                run_git(["config", "--local", key, value], self.path)
        run_git(["config", "--local", "tag.gpgSign", "false"], self.path)
        run_git(["config", "--local", "commit.gpgSign", "false"], self.path)

    def ensure_layout(
        self, artifacts: Mapping[str, str], message: str, *, switch_storage: bool = False
    ) -> bool:
        """Write README, DVC config and ``dvc.yaml`` entries; commit if anything changed.
        The storage files move to another storage only with ``switch_storage``."""
        changed: list[str] = []
        current = parse_dvc_yaml(self._read_work("dvc.yaml") or "", "the registry's dvc.yaml")
        merged = {**current, **{k: v for k, v in artifacts.items() if k not in current}}
        files = {
            "README.md": current_readme(self._read_work("README.md")),
            ".dvc/.gitignore": "/config.local\n/tmp\n/cache\n",
            ".dvcignore": "",
            "dvc.yaml": render_dvc_yaml(merged),
            **storage_files(self.path, self.remote_settings, switch=switch_storage),
        }
        for name in merged:
            files[f"{artifact_dir(name)}/.gitignore"] = f"/{POINTER_STEM}\n"
        refuse_overlaps([a for a in artifacts if a not in current], merged)
        with self.unchanged_on_failure():
            for rel, text in files.items():
                if self._write_work(rel, text):
                    changed.append(rel)
            if changed or self.head() is None:
                switched = switch_storage and RECORD in changed
                trailers = {"Cpv-Action": "storage"} if switched else {}
                if self.head() is None:
                    # the root commit names the registry (gc's ownership marker): two
                    # registries laid out in the same second must not share it
                    trailers["Cpv-Registry"] = uuid.uuid4().hex
                self.commit(changed or ["README.md"], message, trailers=trailers)
                return True
        return False

    @contextmanager
    def unchanged_on_failure(self) -> Iterator[None]:
        """Run a registry step; when it fails, every file it wrote or staged is put back as
        HEAD has it, so the next step (and a restart) starts from a clean work tree."""
        if self._written is not None:  # nested: the outermost block restores
            yield
            return
        self._written = []
        try:
            yield
        except BaseException:
            try:
                put_back(self.path, self._written)
            except Exception:
                log.exception("could not restore the registry work tree after a failed step")
            raise
        finally:
            self._written = None

    def _read_work(self, rel: str) -> str | None:
        try:
            return (self.path / rel).read_text()
        except FileNotFoundError:
            return None

    def _write_work(self, rel: str, text: str) -> bool:
        """Write a tracked file atomically; True when its content changed."""
        dest = self.path / rel
        if self._read_work(rel) == text and self._is_tracked(rel):
            return False
        if self._written is not None:
            self._written.append(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.cpv-tmp")
        tmp.write_text(text)
        os.replace(tmp, dest)
        return True

    def _is_tracked(self, rel: str) -> bool:
        return (
            run_git(["ls-files", "--error-unmatch", "--", rel], self.path, check=False).returncode
            == 0
        )

    def reset_worktree(self) -> None:
        """Drop uncommitted changes (after a crash between writing and committing), once
        whatever they were is moved to :attr:`backups`: a hand edit may be someone's work."""
        if self.backups is not None:
            set_aside(self.path, self.backups)
        if self.head() is not None:
            run_git(["reset", "-q", "--hard", "HEAD"], self.path)
        run_git(["clean", "-q", "-fd", "--", "artifacts", "dvc.yaml"], self.path, check=False)

    # -- pointers and commits -----------------------------------------------------------
    def pointer(self, artifact: str, rev: str = "HEAD") -> Pointer | None:
        """The artifact's pointer at ``rev``; None when it has none there.

        Raises DvcFileError when the file is there but is not a DVC pointer."""
        rel = pointer_file(artifact)
        text = self.read_file(rel, rev)
        return parse_pointer(text, f"{rel} at {rev}") if text else None

    def write_pointer(self, artifact: str, p: Pointer) -> str:
        rel = pointer_file(artifact)
        self._write_work(rel, render_pointer(p))
        return rel

    def commit(
        self, paths: Iterable[str], message: str, trailers: Mapping[str, str | list[str]]
    ) -> str:
        lines = [message, ""]
        for key, value in trailers.items():
            for v in [value] if isinstance(value, str) else value:
                lines.append(f"{key}: {v}")
        paths = list(paths)
        body = "\n".join(lines).encode()
        # One process in the common case: ``git commit -- PATHS`` stages and commits tracked
        # paths itself, and with a 40-hex abbrev its summary line names the new commit (no
        # ``rev-parse HEAD`` afterwards). A path git does not know yet (an artifact's first
        # pointer) needs ``git add`` first.
        argv = ["-c", "core.abbrev=40", "commit", "--no-verify", "--allow-empty", "-F", "-"]
        proc = run_git([*argv, "--", *paths] if paths else argv, self.path, check=False, input=body)
        if proc.returncode != 0 and paths and _UNKNOWN_PATH in proc.stderr:
            if self._written is not None:
                self._written.extend(paths)
            run_git(["add", "-A", "--", *paths], self.path)
            proc = run_git(argv, self.path, check=False, input=body)
        if proc.returncode != 0:
            err = (proc.stdout + proc.stderr).decode(errors="replace").strip()
            raise GitError(mask_url(f"`git commit` failed (exit {proc.returncode}): {err}"))
        m = _COMMIT_SUMMARY.match(proc.stdout)
        head = m.group(1).decode() if m else self.head()
        assert head
        self._commits += 1
        if self._commits % MAINTAIN_EVERY == 0:
            self.maintain()
        return head

    def maintain(self) -> None:
        """``git maintenance run --auto``: packs loose objects once there are enough
        (``gc.auto``, 6700 by default; it detaches to do so). Best effort."""
        run_git(["maintenance", "run", "--auto", "--quiet"], self.path, check=False)

    def find_job_commit(self, job_id: str) -> str | None:
        """The newest commit whose ``Cpv-Job`` trailer is ``job_id`` on the current branch.

        ``--grep`` only narrows the search; the match is on the parsed trailer, so a
        ``Cpv-Job:`` line inside a message's text (a crafted file name) names nothing.
        """
        if self.head() is None:
            return None
        out = git_out(
            [
                "log",
                "--format=%H%x00%(trailers:key=Cpv-Job,valueonly,separator=%x01)",
                "-F",
                f"--grep=Cpv-Job: {job_id}",
                "HEAD",
            ],
            self.path,
        )
        for line in out.splitlines():
            sha, _, values = line.partition("\x00")
            if job_id in (v.strip() for v in values.split("\x01")):
                return sha
        return None

    def trailers(self, commit: str) -> dict[str, list[str]]:
        out = git_out(["show", "-s", "--format=%(trailers:only,unfold)", commit], self.path)
        result: dict[str, list[str]] = {}
        for line in out.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                result.setdefault(key.strip(), []).append(value.strip())
        return result

    # -- tags ---------------------------------------------------------------------------
    def tag_target(self, tag: str) -> str | None:
        proc = run_git(
            ["rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"], self.path, check=False
        )
        return proc.stdout.decode().strip() or None

    def create_tag(self, tag: str, commit: str, message: str) -> None:
        run_git(["tag", "-a", "-F", "-", "--", tag, commit], self.path, input=message.encode())

    def delete_tags(self, tags: Iterable[str]) -> None:
        tags = list(tags)
        if tags:
            run_git(["tag", "-d", *tags], self.path)

    # -- remote -------------------------------------------------------------------------
    @property
    def has_remote(self) -> bool:
        return bool(self.cfg.remote)

    def push(self, refs: Iterable[str] = ()) -> None:
        """Atomic push of the branch, every annotated tag reachable from it, and ``refs``.

        Raises PushRejected when another machine got there first, GitError (retryable)
        when the remote cannot be reached.
        """
        argv = [
            "push",
            "--atomic",
            "--follow-tags",
            "--porcelain",
            REMOTE,
            f"refs/heads/{BRANCH}:refs/heads/{BRANCH}",
            *refs,
        ]
        proc = run_git(argv, self.path, env=self._env, check=False, timeout=600)
        if proc.returncode == 0:
            if not self._head_checked and self.cfg.remote:
                self._head_checked = True  # once per start: a round trip to the remote
                ensure_remote_head(self.path, REMOTE, self.cfg.remote, BRANCH, self._env)
            return
        text = (proc.stdout + proc.stderr).decode(errors="replace")
        remote = mask_url(self.cfg.remote or REMOTE)
        kind = push_failure_kind(text)
        if kind == "race":
            raise PushRejected(mask_url(text.strip()))
        if kind == "locked":
            raise GitError(
                f"{remote} is locked by {remote_lock_of(text)}: another push is "
                "running there, or a killed one left it behind; if no git process is using "
                "the remote, remove that file"
            )
        if kind == "refused":
            raise GitError(mask_url(f"{remote} refused the push: {_remote_says(text)}"))
        raise GitError(mask_url(f"cannot push to {remote}: {text.strip()}"))

    def fetch(self) -> bool:
        """Fetch the remote branch and every remote tag that does not clash with a local one.

        Returns whether any tag arrived or moved (git's auto-following brings tags other
        machines made on commits we have), so a caller can keep its tag index otherwise.
        """
        proc = run_git(
            ["fetch", REMOTE, f"+refs/heads/{BRANCH}:refs/remotes/{REMOTE}/{BRANCH}"],
            self.path,
            env=self._env,
            timeout=600,
        )
        return _fetched_tags(proc.stderr.decode(errors="replace"))

    def remote_tags(self) -> dict[str, str]:
        """Tag name -> peeled commit, as the remote has them (one ``ls-remote``)."""
        out = git_out(["ls-remote", "--tags", REMOTE], self.path, env=self._env, timeout=600)
        tags: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            name = ref.removeprefix("refs/tags/")
            if name.endswith("^{}"):
                tags[name[:-3]] = sha
            else:
                tags.setdefault(name, sha)
        return tags

    def fetch_tags(self, names: Iterable[str]) -> None:
        specs = [f"refs/tags/{n}:refs/tags/{n}" for n in names]
        for i in range(0, len(specs), 500):
            run_git(
                ["fetch", "-q", "--no-tags", REMOTE, *specs[i : i + 500]],
                self.path,
                env=self._env,
                timeout=600,
            )

    def remote_branch(self) -> str | None:
        proc = run_git(
            ["rev-parse", "-q", "--verify", f"refs/remotes/{REMOTE}/{BRANCH}"],
            self.path,
            check=False,
        )
        return proc.stdout.decode().strip() or None

    def unpushed_commits(self) -> list[str]:
        """Local commits the remote branch lacks, oldest first."""
        base = self.remote_branch()
        rng = f"{base}..HEAD" if base else "HEAD"
        if self.head() is None:
            return []
        out = git_out(["rev-list", "--reverse", rng], self.path)
        return out.split()

    def reset_hard(self, rev: str) -> None:
        run_git(["reset", "-q", "--hard", rev], self.path)


def _remote_says(text: str) -> str:
    """The refusal's reason and the remote's own words (``remote:`` lines from its hook)."""
    reasons = sorted({m["reason"] for m in _REFUSED_LINE.finditer(text)})
    said = [ln.removeprefix("remote:").strip() for ln in text.splitlines()]
    said = [s for s, ln in zip(said, text.splitlines(), strict=True) if ln.startswith("remote:")]
    return "; ".join(reasons + [s for s in said if s])


def _fetched_tags(output: str) -> bool:
    """Whether ``git fetch`` (run with ``LC_ALL=C``) reported a new or updated tag."""
    return any(
        "[new tag]" in line or "[tag update]" in line or "refs/tags/" in line
        for line in output.splitlines()
    )


__all__ = [
    "BRANCH",
    "REMOTE",
    "PushRejected",
    "RegistryRepo",
    "push_failure_kind",
    "remote_lock_of",
]


class PushRejected(GitError):
    """The remote moved on (another machine pushed): fetch, replay, retry."""
