"""Proven completeness (cpvd.watch.proof): a file renamed from a temporary name inside the
watch, or closed after writing a self-proving format, is ready at once; anything else
waits out its quiet period, and later activity re-opens a proven one. Real files, a fake
clock, the real format checks."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import pytest

from cpvd.watch.settle import Tracker
from cpvd.watch.units import UnitRules

AUTO = UnitRules(layout="auto")


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", os.urandom(2000))
    return buf.getvalue()


def safetensors_bytes(n: int = 64) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return struct.pack("<Q", len(header)) + header + os.urandom(n)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "ck"
    r.mkdir()
    return r


def ready(t: Tracker, now: float) -> list[str]:
    return [d.path.name for d in t.due(now) if d.status == "ready"]


def test_rename_of_a_temporary_name_is_ready_at_once(root: Path) -> None:
    (root / "x.safetensors").write_bytes(safetensors_bytes())
    t = Tracker(root, 5.0, rules=AUTO)
    t.observe(root / "x.safetensors", 10.0, modified=False, renamed=True)
    assert ready(t, 10.0) == ["x.safetensors"]
    assert [h.sealed for h in t.hints()] == [True]


def test_a_renamed_file_is_still_validated(root: Path) -> None:
    torn = safetensors_bytes()[:-10]
    (root / "x.safetensors").write_bytes(torn)
    t = Tracker(root, 5.0, rules=AUTO)
    t.observe(root / "x.safetensors", 10.0, modified=False, renamed=True)
    decisions = t.due(10.0)
    assert [d.status for d in decisions] == ["waiting"]


def test_a_rename_in_from_outside_waits_its_quiet_period(root: Path) -> None:
    (root / "x.safetensors").write_bytes(safetensors_bytes())
    t = Tracker(root, 5.0, rules=AUTO)
    t.observe(root / "x.safetensors", 10.0, modified=False)  # "created": no proof
    assert ready(t, 10.0) == []
    assert ready(t, 15.0) == ["x.safetensors"]


def test_close_after_writing_a_whole_zip_is_ready_at_once(root: Path) -> None:
    f = root / "epoch-1.pt"
    f.write_bytes(zip_bytes())
    t = Tracker(root, 5.0, rules=AUTO)
    t.observe(f, 10.0, modified=True)
    assert ready(t, 10.0) == []
    t.observe(f, 11.0, closed=True, modified=True)
    assert ready(t, 11.0) == ["epoch-1.pt"]


def test_close_of_a_torn_zip_or_an_unknown_format_proves_nothing(root: Path) -> None:
    torn, raw = root / "a.pt", root / "b.bin"
    torn.write_bytes(zip_bytes()[:-30])
    raw.write_bytes(os.urandom(500))  # appended chunk by chunk, closed after each
    t = Tracker(root, 5.0, rules=AUTO)
    for f in (torn, raw):
        t.observe(f, 10.0, closed=True, modified=True)
    assert ready(t, 10.0) == []
    assert sorted(d.path.name for d in t.due(15.0)) == ["a.pt", "b.bin"]


def test_activity_after_a_proof_reopens_the_quiet_period(root: Path) -> None:
    f = root / "x.safetensors"
    f.write_bytes(safetensors_bytes())
    t = Tracker(root, 5.0, rules=AUTO)
    t.observe(f, 10.0, modified=False, renamed=True)
    with open(f, "ab") as w:  # written again before the daemon looked
        w.write(b"more")
    t.observe(f, 10.0, modified=True)
    assert ready(t, 10.0) == []
    assert [d.status for d in t.due(15.0)] == ["waiting"]  # and now torn: never a version


def test_a_directory_renamed_from_a_temporary_name_is_not_proven(root: Path) -> None:
    d = root / "checkpoint-5"
    d.mkdir()
    (d / "trainer_state.json").write_text("{}")
    t = Tracker(root, 5.0, rules=AUTO)
    t.observe(d, 10.0, modified=False, renamed=True)  # other ranks' files can land later
    assert ready(t, 10.0) == []
    assert ready(t, 15.0) == ["checkpoint-5"]
