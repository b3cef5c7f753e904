"""The registry's git housekeeping: git's own ``maintenance run --auto`` after every commit
is off (one process per version fewer, waited for on the registry thread); cpvd runs it
itself every MAINTAIN_EVERY commits, so loose objects are still packed in time."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.config.model import RegistryConfig
from cpvd.registry import repo as repo_module
from cpvd.registry.repo import RegistryRepo


def test_maintenance_runs_every_few_commits_not_after_each(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo_module, "MAINTAIN_EVERY", 3)
    trace = short_tmp / "trace2.log"
    monkeypatch.setenv("GIT_TRACE2", str(trace))  # git logs every git process it starts
    path = short_tmp / "reg"
    reg = RegistryRepo(RegistryConfig(path=path), {"url": "/x"})
    reg.open({"a/b": "model"})

    def maintenance_runs() -> int:
        return trace.read_text().count("cmd_name maintenance")

    runs_before = maintenance_runs()  # opening commits the layout: counted from here
    commits_before = reg._commits
    for i in range(6):
        (path / "note.txt").write_text(f"{i}\n")
        reg.git("add", "note.txt")
        reg.commit(["note.txt"], f"commit {i}", trailers={})
    made = reg._commits - commits_before
    assert made == 6
    expected = reg._commits // 3 - commits_before // 3
    assert maintenance_runs() - runs_before == expected == 2
