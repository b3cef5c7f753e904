"""A registry written by others, through real git: hand-made tags whose names or manifests
escape, a registry that lost its ``.git`` inside another repository, a version number
taken by hand, a name that tries to forge a job trailer."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cpvd.config.model import WatchConfig
from cpvd.errors import CpvError, InputError, NotFound, StateError
from cpvd.registry.engine import Engine, VersionRequest
from cpvd.registry.versioning import commit_version
from cpvd.storage.hashing import hash_checkpoint
from tests.integration.engine_helpers import make_config, make_engine, version_checkpoint, write


def git(repo: Path, *args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=repo, input=input, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def engine_on(short_tmp: Path, artifact: str = "b/two") -> tuple[Engine, Path]:
    work = short_tmp / "work"
    work.mkdir(exist_ok=True)
    cfg = make_config(
        short_tmp, str(short_tmp / "storage"), watches=(WatchConfig(path=work, artifact=artifact),)
    )
    return make_engine(cfg), work


def hand_tag(repo: Path, tag: str, body: dict[str, object], commit: str = "HEAD") -> None:
    git(repo, "tag", "-a", "-F", "-", tag, commit, input=json.dumps(body))


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_hand_made_tags_that_escape_write_nothing_outside_the_target(short_tmp: Path) -> None:
    engine, work = engine_on(short_tmp)
    reg = engine.registry.path
    first = version_checkpoint(engine, VersionRequest("b/two", write(work / "one.bin", b"one")))
    body = json.loads(first.info.message())
    # 1: a file version whose name climbs out of the target
    hand_tag(reg, "b/two@v1.1.0", {**body, "name": "../escaped.txt"})
    # 2: a directory version whose (correctly hashed) manifest climbs out
    evil = b"evil bytes"
    engine.storage.put_bytes(hashlib.md5(evil).hexdigest(), evil)
    listed = json.dumps([{"md5": hashlib.md5(evil).hexdigest(), "relpath": "../escaped-dir.txt"}])
    dir_md5 = hashlib.md5(listed.encode()).hexdigest() + ".dir"
    engine.storage.put_bytes(dir_md5, listed.encode())
    hand_tag(reg, "b/two@v1.2.0", {**body, "md5": dir_md5, "is_dir": True, "name": "d"})
    engine.invalidate()
    before = files_under(short_tmp)
    target = work / "out"
    target.mkdir()

    with pytest.raises(NotFound):  # the tag is skipped: it is no version of b/two
        engine.revert("b/two", "v1.1.0", to=target)
    with pytest.raises(NotFound):
        engine.revert("b/two", "v1.1.0")  # next to its source, in the watch
    with pytest.raises(CpvError) as err:
        engine.revert("b/two", "v1.2.0", to=target)
    assert "escaped-dir.txt" in err.value.message
    with pytest.raises(CpvError):  # the pull path reads the same manifest
        engine.manifest("b/two", "v1.2.0")

    assert files_under(short_tmp) == before | {"work/out"}
    assert list(target.iterdir()) == []
    assert [v.version for v in engine.versions("b/two")] == ["v1.2.0", "v1.0.0"]
    # the skipped tag's number stays taken; the next version goes past both
    nxt = version_checkpoint(engine, VersionRequest("b/two", write(work / "two.bin", b"two")))
    assert nxt.info.version == "v1.3.0"


def test_a_registry_without_its_git_never_writes_to_an_enclosing_repository(
    short_tmp: Path,
) -> None:
    outer = short_tmp / "outer"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    git(outer, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "--allow-empty",
        "-m", "outer")
    outer_head = git(outer, "rev-parse", "HEAD")
    engine, work = engine_on(outer)
    reg = engine.registry.path
    assert reg.is_relative_to(outer)
    version_checkpoint(engine, VersionRequest("b/two", write(work / "one.bin", b"one")))
    shutil.rmtree(reg / ".git")

    with pytest.raises(CpvError):  # the running engine: git finds no repository
        version_checkpoint(engine, VersionRequest("b/two", write(work / "two.bin", b"two")))
    with pytest.raises(StateError) as err:  # a restart: an error, not a fresh registry
        make_engine(engine.config)
    assert "is not a git repository" in err.value.message and str(reg) in err.value.message
    assert not (reg / ".git").exists()
    assert git(outer, "rev-parse", "HEAD") == outer_head
    assert git(outer, "tag", "-l") == ""


def test_a_version_number_taken_by_hand_is_skipped_and_never_moved(short_tmp: Path) -> None:
    engine, work = engine_on(short_tmp, "a")
    reg = engine.registry.path
    version_checkpoint(engine, VersionRequest("a", write(work / "one.bin", b"one")))
    unrelated = git(reg, "commit-tree", "HEAD^{tree}", "-m", "by hand")
    git(reg, "tag", "-a", "-m", "made by hand", "a@v1.1.0", unrelated)  # after the index read

    second = version_checkpoint(engine, VersionRequest("a", write(work / "two.bin", b"two")))
    assert second.info.version == "v1.2.0"
    head = git(reg, "rev-parse", "HEAD")
    assert git(reg, "rev-parse", "a@v1.2.0^{commit}") == head
    assert git(reg, "rev-parse", "a@v1.1.0^{commit}") == unrelated
    assert git(reg, "status", "--porcelain") == ""


def test_a_resumed_job_whose_number_was_taken_re_picks_instead_of_failing(
    short_tmp: Path,
) -> None:
    engine, work = engine_on(short_tmp, "a")
    reg = engine.registry.path
    version_checkpoint(engine, VersionRequest("a", write(work / "one.bin", b"one")))
    req = VersionRequest("a", write(work / "two.bin", b"two"))
    content = hash_checkpoint(req.path)
    engine.upload(req.path, content)
    commit, tag = commit_version(engine, req, content)  # then a crash before the tag
    assert tag == "a@v1.1.0"
    unrelated = git(reg, "commit-tree", "HEAD^{tree}", "-m", "by hand")
    git(reg, "tag", "-a", "-m", "made by hand", tag, unrelated)

    result = engine.version(req, content, resume=True)
    assert result.info.version == "v1.2.0"
    head = git(reg, "rev-parse", "HEAD")
    assert head != commit and git(reg, "rev-parse", "a@v1.2.0^{commit}") == head
    assert git(reg, "rev-parse", "a@v1.1.0^{commit}") == unrelated
    assert git(reg, "log", "--format=%H", f"--grep=Cpv-Job: {req.job_id}").split() == [head]


def test_a_name_cannot_forge_a_job_trailer(short_tmp: Path) -> None:
    engine, work = engine_on(short_tmp, "a")
    reg = engine.registry.path
    other = "f" * 32
    crafted = f"x.bin\nCpv-Job: {other}"
    before = git(reg, "rev-parse", "HEAD")
    with pytest.raises(InputError) as err:
        version_checkpoint(
            engine, VersionRequest("a", write(work / "x.bin", b"x"), name=crafted)
        )
    assert err.value.code == "invalid_name"
    assert git(reg, "rev-parse", "HEAD") == before and git(reg, "status", "--porcelain") == ""

    # a message that carries the line anyway (another tool, an older cpvd): not a trailer
    mine = "a" * 32
    rel = engine.registry.write_pointer("a", engine.pointer_at_head("a") or _pointer())
    forged = engine.registry.commit(
        [rel], f"cpv: a v9 from {crafted}\n\nCpv-Job: {other} (in the text)", {"Cpv-Job": mine}
    )
    assert engine.registry.find_job_commit(other) is None
    assert engine.registry.find_job_commit(mine) == forged

    # quoted names: odd but legal characters reach the subject as one JSON string
    odd = version_checkpoint(
        engine, VersionRequest("a", write(work / "y.bin", b"y"), name='we"ird Cpv-Job: 1.bin')
    )
    subject = git(reg, "log", "-1", "--format=%s", odd.info.commit or "HEAD")
    assert subject.endswith('from "we\\"ird Cpv-Job: 1.bin"')
    assert engine.registry.find_job_commit("1.bin") is None


def _pointer() -> object:
    from cpvd.registry.dvcfiles import Pointer

    return Pointer("0" * 32, 1, 1, False)
