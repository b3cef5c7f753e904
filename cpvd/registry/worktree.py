"""Putting the registry's work tree back as HEAD has it, without losing anyone's edits.

Two cases: a registry step that failed half-way (its own writes are restored, so the next
artifact and a restart find a clean tree), and start-up after a crash or a hand edit, where
whatever ``reset --hard`` and ``clean`` would destroy is first moved to the state dir's
``backups/<timestamp>-registry/``, as revert does with the files it replaces.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from cpvd.registry.git import run_git

log = logging.getLogger(__name__)

#: what start-up's ``git clean`` removes when untracked (tracked edits anywhere are reset)
CLEANED = ("artifacts", "dvc.yaml")


def put_back(repo: Path, paths: Iterable[str]) -> None:
    """Unstage ``paths`` and give them HEAD's content; ones HEAD lacks are deleted."""
    paths = sorted(set(paths))
    if not paths:
        return
    has_head = run_git(["rev-parse", "-q", "--verify", "HEAD"], repo, check=False).stdout.strip()
    in_head: set[str] = set()
    if has_head:
        run_git(["reset", "-q", "HEAD", "--", *paths], repo, check=False)
        listed = run_git(["ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *paths], repo)
        in_head = {os.fsdecode(p) for p in listed.stdout.split(b"\0") if p}
    if in_head:
        run_git(["checkout", "-q", "HEAD", "--", *sorted(in_head)], repo)
    for rel in paths:
        if rel not in in_head:
            run_git(["rm", "-q", "--cached", "--ignore-unmatch", "--", rel], repo, check=False)
            (repo / rel).unlink(missing_ok=True)


def discarded_by_reset(repo: Path) -> list[str]:
    """The paths ``reset --hard`` plus start-up's ``clean`` would lose: tracked files whose
    content differs from HEAD, staged new files, untracked files under :data:`CLEANED`."""
    out = run_git(
        ["status", "--porcelain=v1", "-z", "--no-renames", "--untracked-files=all"], repo
    ).stdout
    lost = []
    for entry in out.split(b"\0"):
        if len(entry) < 4:
            continue
        code, rel = entry[:2], os.fsdecode(entry[3:])
        if not os.path.lexists(repo / rel):
            continue  # deleted: HEAD has it, nothing to save
        if code != b"??" or rel.split("/", 1)[0] in CLEANED:
            lost.append(rel)
    return lost


def set_aside(repo: Path, backups: Path) -> Path | None:
    """Move what a reset would lose to ``backups/<timestamp>-registry/`` (paths kept)."""
    lost = discarded_by_reset(repo)
    if not lost:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    folder = backups / f"{stamp}-registry"
    n = 1
    while folder.exists():
        n += 1
        folder = backups / f"{stamp}-registry-{n}"
    for rel in lost:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(repo / rel, target)
    log.warning(
        "the registry work tree had uncommitted changes; moved them to %s before resetting "
        "it: %s",
        folder,
        ", ".join(repr(r) for r in lost),
    )
    return folder
