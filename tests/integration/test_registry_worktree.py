"""The registry's work tree after a refused or failed step, and across a restart: nested
artifacts are refused before anything is written, a failed commit leaves nothing behind,
and hand edits are moved aside (never dropped) when start-up resets the tree."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from cpvd.config.model import WatchConfig
from cpvd.errors import CpvError, InputError
from cpvd.registry.engine import Engine, VersionRequest
from tests.integration.engine_helpers import make_config, make_engine, version_checkpoint, write


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def new_engine(short_tmp: Path) -> tuple[Engine, Path]:
    work = short_tmp / "work"
    work.mkdir(exist_ok=True)
    cfg = make_config(
        short_tmp, str(short_tmp / "storage"), watches=(WatchConfig(path=work, artifact="t0"),)
    )
    return make_engine(cfg), work


@pytest.mark.parametrize(
    ("first", "second"),
    [("t1", "t1/checkpoint"), ("t1/checkpoint", "t1"), ("t1", "t1/checkpoint/deeper")],
)
def test_nested_artifacts_are_refused_either_order_and_leave_the_tree_clean(
    short_tmp: Path, first: str, second: str
) -> None:
    engine, work = new_engine(short_tmp)
    reg = engine.registry.path
    version_checkpoint(engine, VersionRequest(first, write(work / "a.bin", b"a")))
    head = git(reg, "rev-parse", "HEAD")
    for _ in range(2):  # refused every time, the same way, without a retry
        with pytest.raises(InputError) as err:
            version_checkpoint(engine, VersionRequest(second, write(work / "b.bin", b"b")))
        assert err.value.code == "artifact_overlaps" and not err.value.retryable
        assert repr(first) in err.value.message and repr(second) in err.value.message
        assert git(reg, "status", "--porcelain", "--ignored=no") == ""
        assert git(reg, "rev-parse", "HEAD") == head
    # the first artifact, other artifacts and a restart all carry on
    assert version_checkpoint(engine, VersionRequest(first, write(work / "c.bin", b"c"))).info
    assert version_checkpoint(engine, VersionRequest("t1x", write(work / "d.bin", b"d"))).info
    make_engine(engine.config).registry.reset_worktree()


def test_a_failing_commit_leaves_the_tree_as_it_was_and_the_next_version_works(
    short_tmp: Path,
) -> None:
    engine, work = new_engine(short_tmp)
    reg = engine.registry.path
    version_checkpoint(engine, VersionRequest("t0", write(work / "a.bin", b"a")))
    block = reg / ".git" / "block"
    hook = reg / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f'#!/bin/sh\n[ "$1" = prepared ] && [ -e "{block}" ] && exit 1\nexit 0\n')
    hook.chmod(0o755)
    block.touch()
    head = git(reg, "rev-parse", "HEAD")
    # a new artifact (layout + first pointer) and a new version of a known one
    for name, data in (("fresh/one", b"f"), ("t0", b"b")):
        with pytest.raises(CpvError):
            version_checkpoint(engine, VersionRequest(name, write(work / f"{data!r}", data)))
        assert git(reg, "status", "--porcelain") == ""
        assert git(reg, "rev-parse", "HEAD") == head
    block.unlink()
    assert version_checkpoint(engine, VersionRequest("fresh/one", work / "b'f'")).info.version == (
        "v1.0.0"
    )
    assert version_checkpoint(engine, VersionRequest("t0", work / "b'b'")).info.version == "v1.1.0"
    assert git(reg, "status", "--porcelain") == ""


def test_a_restart_moves_uncommitted_edits_aside_before_resetting(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, work = new_engine(short_tmp)
    reg = engine.registry.path
    version_checkpoint(engine, VersionRequest("t0", write(work / "a.bin", b"a")))
    (reg / "artifacts/t0/checkpoint.dvc").write_text("edited by hand\n")
    write(reg / "artifacts/t0/notes.txt", b"my notes")
    write(reg / "dvc.yaml.orig", b"kept where it is: start-up never cleans it")

    caplog.set_level(logging.WARNING)
    reopened = make_engine(engine.config)
    reopened.registry.reset_worktree()  # what start-up does after opening

    [folder] = (Path(engine.config.daemon.state_dir) / "backups").iterdir()
    assert folder.name.endswith("-registry")
    assert (folder / "artifacts/t0/checkpoint.dvc").read_text() == "edited by hand\n"
    assert (folder / "artifacts/t0/notes.txt").read_bytes() == b"my notes"
    assert "artifacts/t0/notes.txt" in caplog.text and str(folder) in caplog.text
    assert git(reg, "status", "--porcelain") == "?? dvc.yaml.orig"
    assert "edited" not in (reg / "artifacts/t0/checkpoint.dvc").read_text()
    reopened.registry.reset_worktree()  # nothing left to move: no second backup
    assert len(list(folder.parent.iterdir())) == 1
