"""The tag index reads GTO deregistrations ``NAME@vX.Y.Z!#N`` (untrusted tag names)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cpvd.registry import index as index_module
from cpvd.registry.index import read_index

MD5 = "0123456789abcdef0123456789abcdef"
C1, C2, C3 = "1" * 40, "2" * 40, "3" * 40


def _version(artifact: str, version: str) -> str:
    body = {
        "artifact": artifact, "version": version, "md5": MD5, "size": 1, "nfiles": 1,
        "is_dir": False, "name": "a.pt", "source": "/w/a.pt",
    }  # fmt: skip
    return json.dumps(body)


def _index(records: list[tuple[str, str, str]]) -> Any:
    """``records``: (tag name, peeled commit, message), all annotated tags."""
    out = "".join(f"{n}\x00tag\x00{'f' * 40}\x00{c}\x00{m}\x1e\n" for n, c, m in records)

    def fake_git(args: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, 0, out.encode(), b"")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(index_module, "run_git", fake_git)
        return read_index(Path("/nonexistent"))


def test_a_deregistration_on_the_versions_commit_prunes_it() -> None:
    index = _index(
        [
            ("t/m@v1.0.0", C1, _version("t/m", "v1.0.0")),
            ("t/m@v1.1.0", C2, _version("t/m", "v1.1.0")),
            ("t/m#best#1", C2, "stage"),
            ("t/m@v1.0.0!#2", C1, "Deregistering"),
        ]
    )
    assert index.is_pruned("t/m", "v1.0.0") and not index.is_pruned("t/m", "v1.1.0")
    assert [v.pruned for v in index.artifact_versions("t/m")] == [False, True]
    assert index.artifact_versions("t/m")[1].to_json()["pruned"] is True
    # GTO's counter is shared by stage and deregistration tags of one artifact
    assert index.next_stage_counter("t/m") == 3
    assert "t/m@v1.0.0!#2" in index.tags  # gc reads pruned names from here too


@pytest.mark.parametrize(
    "name",
    [
        "t/m@v1.0.0!#x",  # no counter
        "t/m@v01.0.0!#2",  # not the version's strict spelling
        "t/m@1.0.0!#2",  # no v
        "../t/m@v1.0.0!#2",  # not a GTO name
        "t/m@v1.0.0!!#2",
        "t/m@v1.0.0#2",
    ],
)
def test_malformed_deregistrations_deregister_nothing(name: str) -> None:
    index = _index([("t/m@v1.0.0", C1, _version("t/m", "v1.0.0")), (name, C1, "x")])
    assert not index.is_pruned("t/m", "v1.0.0")
    assert index.deregistrations == []


def test_a_deregistration_on_another_commit_deregisters_nothing() -> None:
    index = _index([("t/m@v1.0.0", C1, _version("t/m", "v1.0.0")), ("t/m@v1.0.0!#1", C3, "x")])
    assert not index.is_pruned("t/m", "v1.0.0")
    assert index.next_stage_counter("t/m") == 2  # its counter still counts (as GTO's does)
