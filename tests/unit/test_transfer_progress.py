"""migrate-storage's progress for one big object, and its journal of verified objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.storage import transfer
from cpvd.storage.transfer import VerifiedJournal, byte_progress


def test_a_big_object_says_how_far_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "PROGRESS_EVERY", 3 << 20)
    said: list[str] = []
    progress = byte_progress(said.append, "[1/1] files/md5/ab/cd", 10 << 20)
    for _ in range(10):
        progress(1 << 20)
    assert said == [
        "[1/1] files/md5/ab/cd: 3 of 10 MiB",
        "[1/1] files/md5/ab/cd: 6 of 10 MiB",
        "[1/1] files/md5/ab/cd: 9 of 10 MiB",
    ]


def test_the_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    md5 = "0123456789abcdef0123456789abcdef"
    journal = VerifiedJournal(tmp_path / "j.txt")
    journal.add(md5)
    journal.add(md5[:-1] + "0.dir")
    with open(tmp_path / "j.txt", "a") as f:
        f.write("0123456789ab")  # a kill mid-line
    again = VerifiedJournal(tmp_path / "j.txt")
    assert md5 in again and md5[:-1] + "0.dir" in again
    assert "0123456789ab" not in again
    assert "../../etc/passwd" not in again
