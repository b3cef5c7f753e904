"""What every fault test asserts at the end: the registry a colleague would clone is sound.

``assert_registry_sound`` clones the bare remote afresh (so only what was really pushed
counts), then checks Git's own integrity, the shape of the history and tags, and that every
version's bytes come back through plain DVC, as a user without CPV would get them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import git


def _dvc_argv() -> list[str]:
    import shutil
    import sys

    exe = Path(sys.executable).with_name("dvc")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dvc")
    assert found, "the dvc CLI is needed to check pulls"
    return [found]


@dataclass
class Version:
    tag: str
    artifact: str
    version: str
    md5: str
    commit: str
    message: dict[str, object]


@dataclass
class RegistryReport:
    versions: list[Version]
    by_md5: dict[str, list[Version]] = field(default_factory=dict)
    commits: int = 0
    pulled: int = 0


def md5_of_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def fsck_clean(repo: Path) -> None:
    proc = subprocess.run(
        ["git", "fsck", "--full", "--strict", "--no-dangling"],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and not proc.stdout.strip(), (
        f"git fsck in {repo} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )


def read_versions(repo: Path) -> list[Version]:
    """Every ``name@vX.Y.Z`` tag: annotated, pointing at a commit, with a JSON message."""
    fmt = "%(refname:strip=2)%00%(objecttype)%00%(*objectname)%00%(contents)%00%00"
    out = git(repo, "for-each-ref", f"--format={fmt}", "refs/tags/")
    versions = []
    for record in out.split("\0\0\n"):
        if not record.strip():
            continue
        name, otype, target, contents = record.split("\0", 3)
        if "@v" not in name:
            continue
        assert otype == "tag", f"{name} is not an annotated tag"
        artifact, _, version = name.rpartition("@")
        message = json.loads(contents)
        versions.append(Version(name, artifact, version, str(message["md5"]), target, message))
    return versions


def assert_registry_sound(
    remote: Path,
    expected: Mapping[str, str],
    *,
    pull: str = "all",
    exact: bool = True,
    local_clones: tuple[Path, ...] = (),
    branch: str = "main",
) -> RegistryReport:
    """Assert the remote registry holds every expected checkpoint exactly once, intact.

    ``expected`` maps each distinct checkpoint's md5 to its artifact. ``exact``: no version
    may exist beyond them. ``pull``: ``"all"`` checks every version's bytes from the DVC
    remote via ``dvc fetch --all-tags -j 1`` (byte-identical by md5 of what DVC wrote) plus
    a real ``dvc pull -j 1`` checkout of up to three tags; ``"sample"`` only the checkouts.
    ``local_clones`` (the daemons' registries) get ``git fsck`` too.
    """
    fsck_clean(remote)
    for clone in local_clones:
        fsck_clean(clone)
    with tempfile.TemporaryDirectory(prefix="cpv-check-", dir="/tmp") as tmp:
        work = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, timeout=300)
        fsck_clean(work)
        # linear history: no merge commits, one root
        merges = git(work, "rev-list", "--merges", branch).split()
        assert not merges, f"merge commits in the registry: {merges}"
        roots = git(work, "rev-list", "--max-parents=0", branch).split()
        assert len(roots) == 1, f"several root commits: {roots}"
        on_branch = set(git(work, "rev-list", branch).split())
        versions = read_versions(work)
        report = RegistryReport(versions, commits=len(on_branch))
        by_md5: dict[str, list[Version]] = defaultdict(list)
        per_commit: dict[tuple[str, str], list[str]] = defaultdict(list)
        for v in versions:
            by_md5[v.md5].append(v)
            per_commit[(v.artifact, v.commit)].append(v.tag)
            assert v.commit in on_branch, f"{v.tag} points at {v.commit}, not on {branch}"
            assert v.message.get("artifact", v.artifact) in (v.artifact, None)
            # the tag's commit really sets the artifact's pointer to that md5
            pointer = git(work, "show", f"{v.commit}:artifacts/{v.artifact}/checkpoint.dvc")
            assert f"md5: {v.md5}" in pointer, f"{v.tag}: pointer does not name {v.md5}"
        report.by_md5 = dict(by_md5)
        doubled = {k: tags for k, tags in per_commit.items() if len(tags) > 1}
        assert not doubled, f"several versions of one artifact on one commit: {doubled}"
        missing = sorted(set(expected) - set(by_md5))
        assert not missing, f"{len(missing)} checkpoints never became a version: {missing}"
        twice = {m: [v.tag for v in vs] for m, vs in by_md5.items() if len(vs) > 1}
        assert not twice, f"checkpoints versioned more than once: {twice}"
        for m, vs in by_md5.items():
            if m in expected:
                assert vs[0].artifact == expected[m], f"{vs[0].tag}: expected {expected[m]}"
        if exact:
            extra = sorted(v.tag for m, vs in by_md5.items() if m not in expected for v in vs)
            assert not extra, f"versions of unknown content: {extra}"
        if pull == "all":
            report.pulled = _fetch_all(work, versions)
        _checkout_sample(work, versions)
        return report


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _fetch_all(work: Path, versions: list[Version]) -> int:
    """``dvc fetch --all-tags -j 1`` then check every version's object in DVC's cache."""
    subprocess.run(
        [*_dvc_argv(), "fetch", "--all-tags", "-j", "1", "-q"],
        cwd=work, check=True, timeout=1800, env=_env(), capture_output=True,
    )  # fmt: skip
    cache = work / ".dvc" / "cache" / "files" / "md5"
    for v in versions:
        assert not v.md5.endswith(".dir"), "directory versions: extend this check"
        obj = cache / v.md5[:2] / v.md5[2:]
        assert obj.is_file(), f"{v.tag}: dvc fetch brought no object {v.md5}"
        assert md5_of_file(obj) == v.md5, f"{v.tag}: object {v.md5} is corrupt"
    return len(versions)


def _checkout_sample(work: Path, versions: list[Version], k: int = 3) -> None:
    """A real ``git checkout <tag> && dvc pull -j 1`` for a few versions."""
    for v in random.sample(versions, min(k, len(versions))):
        git(work, "checkout", "-q", "--force", v.tag)
        subprocess.run(
            [*_dvc_argv(), "pull", "-j", "1", "-q", "--force"],
            cwd=work, check=True, timeout=1800, env=_env(), capture_output=True,
        )  # fmt: skip
        pulled = work / "artifacts" / v.artifact / "checkpoint"
        assert pulled.is_file(), f"dvc pull of {v.tag} wrote nothing at {pulled}"
        assert md5_of_file(pulled) == v.md5, f"dvc pull of {v.tag}: bytes differ"
