"""Completeness rules and Tracker transitions, on real files with a fake clock."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from cpvd.watch import formats
from cpvd.watch.settle import (
    Decision,
    Tracker,
    checkpoint_root,
    is_ignored_name,
    sidecar_owner,
    signature_of,
    walk,
)

ROOT = Path("/data/ckpts")


# -- names and mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "epoch-1.pt.tmp", "model.part", "x.partial", "dl.crdownload", "train.lock",
        ".hidden", ".metadata", ".tmp-upload", "tmp-checkpoint-500", "latest",
        "zero_to_fp32.py", "epoch-1.pt.metrics.json", "",
    ],
)
def test_ignored_names(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize(
    "name",
    ["epoch-1.pt", "checkpoint-500", "global_step10", "model.safetensors", "metrics.json",
     "latest.pt", "tmp.pt", "part-1.ckpt"],
)
def test_checkpoint_names(name: str) -> None:
    assert not is_ignored_name(name)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/ckpts/epoch-1.pt", "/data/ckpts/epoch-1.pt"),
        ("/data/ckpts/checkpoint-500/model.safetensors", "/data/ckpts/checkpoint-500"),
        ("/data/ckpts/step-9/.metadata", "/data/ckpts/step-9"),  # dot-file inside: part of it
        ("/data/ckpts/step-9/sub/dir/f.tmp", "/data/ckpts/step-9"),  # temp inside: part of it
        ("/data/ckpts/./epoch-2.pt", "/data/ckpts/epoch-2.pt"),
        ("/data/ckpts", None),
        ("/data/ckpts/", None),
        ("/data/ckptsX/epoch-1.pt", None),  # prefix of another directory is not inside
        ("/data/other/epoch-1.pt", None),
        ("/data/ckpts/../other/epoch-1.pt", None),
        ("/data/ckpts/epoch-1.pt.tmp", None),
        ("/data/ckpts/tmp-checkpoint-500/model.bin", None),
        ("/data/ckpts/.trash/epoch-1.pt", None),
        ("/data/ckpts/epoch-1.pt.metrics.json", None),
        ("/data/ckpts/latest", None),
    ],
)
def test_checkpoint_root(path: str, expected: str | None) -> None:
    got = checkpoint_root(ROOT, Path(path))
    assert got == (Path(expected) if expected else None)


def test_sidecar_owner() -> None:
    assert sidecar_owner("epoch-3.pt.metrics.json") == "epoch-3.pt"
    assert sidecar_owner("epoch-3.pt") is None
    assert sidecar_owner(".metrics.json") is None
    assert sidecar_owner("x.tmp.metrics.json") is None


# -- helpers --------------------------------------------------------------------------------


def write(path: Path, data: bytes, mtime_s: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_s is not None:
        os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return path


def make_zip(path: Path, payload: bytes = b"w" * 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    return path


def tracker(root: Path, settle: float = 2.0) -> Tracker:
    return Tracker(root, settle)


def ready(decisions: list[Decision]) -> list[Path]:
    return [d.path for d in decisions if d.status == "ready"]


# -- Tracker --------------------------------------------------------------------------------


def test_quiet_period_then_ready_once(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "a.pt.bin", b"x" * 10)
    assert t.observe(f, 0.0) == f
    assert t.next_due() == 2.0
    assert t.due(1.9) == []
    out = t.due(2.0)
    assert [(d.path, d.status, d.signature.size) for d in out] == [(f, "ready", 10)]
    assert t.due(10.0) == []
    assert t.next_due() is None  # nothing pending: the timer may sleep


def test_activity_restarts_the_quiet_period(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "big.bin", b"x" * 10)
    t.observe(f, 0.0)
    write(f, b"x" * 20)
    t.observe(f, 1.5, closed=True)
    assert t.due(2.0) == []
    assert t.due(3.4) == []
    out = t.due(3.5)
    assert [d.signature.size for d in out] == [20]


def test_event_without_visible_change_still_counts_as_activity(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "a.bin", b"x")
    t.observe(f, 0.0)
    t.observe(f, 1.0)
    assert t.due(2.0) == []
    assert ready(t.due(3.0)) == [f]


def test_second_look_catches_a_change_without_event(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "a.bin", b"x" * 10, mtime_s=1000)
    t.observe(f, 0.0)
    write(f, b"y" * 10, mtime_s=1001)  # same size, no event (lost, or a network filesystem)
    assert t.due(2.0) == []  # the two looks disagree: wait another quiet period
    out = t.due(4.0)
    assert [d.signature.mtime_ns for d in out] == [1001 * 10**9]


def test_change_after_ready_rearms(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "last.bin", b"v1")
    t.observe(f, 0.0)
    first = t.due(2.0)[0].signature
    write(f, b"version2", mtime_s=2000)
    t.observe(f, 5.0)
    out = t.due(7.0)
    assert len(out) == 1 and out[0].signature != first and out[0].signature.size == 8


def test_same_path_and_signature_never_emitted_twice(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "a.bin", b"abc", mtime_s=1000)
    t.observe(f, 0.0)
    assert ready(t.due(2.0)) == [f]
    f.unlink()
    t.observe(f, 3.0)
    assert t.due(5.0) == []
    assert t.tracked() == []
    write(f, b"abc", mtime_s=1000)  # the very same file comes back
    t.scan(6.0)
    assert t.due(8.0) == []
    # any real change is a new signature and is emitted
    write(f, b"abd", mtime_s=1001)
    t.scan(9.0)
    assert ready(t.due(11.0)) == [f]


def test_temp_and_sidecar_names_never_tracked(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    for name in ("a.pt.tmp", "b.part", ".c", "tmp-checkpoint-3/x.bin", "latest"):
        p = write(tmp_path / name, b"data")
        assert t.observe(p, 0.0) is None
    t.scan(0.0)
    assert t.tracked() == []
    assert t.due(100.0) == []


def test_rename_of_temp_file_to_final_name(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    tmp = write(tmp_path / "epoch-1.ckpt.tmp", b"zz")
    t.observe(tmp, 0.0)
    final = tmp_path / "epoch-1.ckpt"
    make_zip(final)
    tmp.unlink()
    t.observe(tmp, 1.0)  # a moved event reports both sides
    t.observe(final, 1.0)
    assert ready(t.due(3.0)) == [final]


def test_sidecar_activity_delays_its_checkpoint(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "e1.bin", b"x")
    t.observe(f, 0.0)
    side = write(tmp_path / "e1.bin.metrics.json", b"{}")
    assert t.observe(side, 1.5) is None
    assert t.due(2.0) == []
    assert ready(t.due(3.5)) == [f]


def test_directory_checkpoint_is_one_decision(tmp_path: Path) -> None:
    t = tracker(tmp_path, settle=1.0)
    d = tmp_path / "export-7"
    for i in range(5):
        p = write(d / "shards" / f"part{i}.npy", b"s" * (i + 1))
        assert t.observe(p, 0.1 * i) == d
    out = t.due(2.0)
    assert [(x.path, x.signature.files, x.signature.size) for x in out] == [(d, 5, 15)]


def test_hf_checkpoint_waits_for_trainer_state(tmp_path: Path) -> None:
    t = tracker(tmp_path, settle=1.0)
    d = tmp_path / "checkpoint-500"
    make_zip(d / "pytorch_model.bin")
    t.observe(d / "pytorch_model.bin", 0.0)
    out = t.due(1.0)
    assert [(x.status, x.reason) for x in out] == [
        ("waiting", "no trainer_state.json yet (written last)")
    ]
    assert t.waiting() == [(d, "no trainer_state.json yet (written last)")]
    assert t.due(1.4) == []  # not reported again
    write(d / "trainer_state.json", b'{"global_step": 500}')
    t.observe(d / "trainer_state.json", 2.0, closed=True)
    out = t.due(3.0)
    assert [(x.path, x.status) for x in out] == [(d, "ready")]
    assert t.waiting() == []


def test_dcp_metadata_rename_makes_it_ready(tmp_path: Path) -> None:
    t = tracker(tmp_path, settle=1.0)
    d = tmp_path / "step-100"
    write(d / "__0_0.distcp", b"a" * 10, mtime_s=500)
    write(d / ".metadata.tmp", b"m" * 5, mtime_s=500)
    t.observe(d / "__0_0.distcp", 0.0)
    t.observe(d / ".metadata.tmp", 0.0)
    assert [x.status for x in t.due(1.0)] == ["waiting"]
    before = signature_of(walk(d) or {})
    os.rename(d / ".metadata.tmp", d / ".metadata")
    after = signature_of(walk(d) or {})
    # same total size, count and newest mtime: only the layout digest tells them apart
    assert before[:3] == after[:3] and before != after
    t.observe(d / ".metadata.tmp", 2.0)
    t.observe(d / ".metadata", 2.0)
    assert [(x.path, x.status) for x in t.due(3.0)] == [(d, "ready")]


def test_invalid_file_waits_until_valid_without_events(tmp_path: Path) -> None:
    t = tracker(tmp_path, settle=1.0)
    f = make_zip(tmp_path / "epoch-3.pt")
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    t.observe(f, 0.0)
    out = t.due(1.0)
    assert out[0].status == "waiting" and "zip" in (out[0].reason or "")
    # recheck with backoff, never giving up
    first = t.next_due()
    assert first is not None and first > 1.0
    t.due(first)
    second = t.next_due()
    assert second is not None and second - first > first - 1.0
    f.write_bytes(good)  # fixed silently: the recheck's walk sees the change
    now = second
    decisions = t.due(now)
    while not decisions:
        nd = t.next_due()
        assert nd is not None
        now = nd
        decisions = t.due(now)
    assert [(x.path, x.status) for x in decisions] == [(f, "ready")]


def test_deepspeed_latest_pokes_waiting_checkpoints(tmp_path: Path) -> None:
    t = tracker(tmp_path, settle=1.0)
    d = tmp_path / "global_step10"
    make_zip(d / "mp_rank_00_model_states.pt")
    t.observe(d / "mp_rank_00_model_states.pt", 0.0)
    assert [x.status for x in t.due(1.0)] == ["waiting"]
    for _ in range(4):  # let the backoff grow
        nd = t.next_due()
        assert nd is not None
        t.due(nd)
    latest = write(tmp_path / "latest", b"global_step10")
    assert t.observe(latest, 100.0) is None
    assert t.next_due() == 101.0
    assert [(x.path, x.status) for x in t.due(101.0)] == [(d, "ready")]


def test_empty_file_waits(tmp_path: Path) -> None:
    t = tracker(tmp_path, settle=1.0)
    f = write(tmp_path / "touch.bin", b"")
    t.observe(f, 0.0)
    assert [(x.status, x.reason) for x in t.due(1.0)] == [("waiting", "empty file")]


def test_scan_finds_new_and_ignores_unchanged(tmp_path: Path) -> None:
    write(tmp_path / "a.bin", b"1")
    make_zip(tmp_path / "b.pt")
    write(tmp_path / "c.tmp", b"3")
    t = tracker(tmp_path)
    t.scan(0.0)
    assert t.tracked() == [tmp_path / "a.bin", tmp_path / "b.pt"]
    assert sorted(ready(t.due(2.0))) == [tmp_path / "a.bin", tmp_path / "b.pt"]
    t.scan(50.0)  # a rescan is not activity
    assert t.next_due() is None
    (tmp_path / "a.bin").unlink()
    t.scan(60.0)
    assert t.tracked() == [tmp_path / "b.pt"]


def test_top_level_symlink_is_not_a_checkpoint(tmp_path: Path) -> None:
    target = make_zip(tmp_path / "epoch=3.ckpt")
    (tmp_path / "last.ckpt").symlink_to(target)
    t = tracker(tmp_path)
    t.scan(0.0)
    assert t.tracked() == [target]


def test_deleted_before_settling_is_dropped(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    f = write(tmp_path / "a.bin", b"1")
    t.observe(f, 0.0)
    f.unlink()
    assert t.due(2.0) == []
    assert t.tracked() == []
    assert t.next_due() is None


def test_change_during_validation_is_not_emitted_with_the_old_signature(tmp_path: Path) -> None:
    """DCP renames ``.metadata`` into place; if that lands between the walk and the format
    check, the check passes on the new tree while the walk saw the old one. Emitting then
    would report a signature of a tree that was never valid, and the real one again later."""
    d = tmp_path / "step-100"
    write(d / "__0_0.distcp", b"a" * 10, mtime_s=500)
    write(d / ".metadata.tmp", b"m" * 5, mtime_s=500)
    renamed: list[bool] = []

    def validate_racing_the_rename(path: Path) -> str | None:
        if not renamed:
            os.rename(d / ".metadata.tmp", d / ".metadata")  # the trainer, mid-check
            renamed.append(True)
        return formats.validate(path)

    t = Tracker(tmp_path, 1.0, validate=validate_racing_the_rename)
    t.observe(d / "__0_0.distcp", 0.0)
    t.observe(d / ".metadata.tmp", 0.0)
    assert t.due(1.0) == []  # changed under the check: another quiet period, no verdict
    assert t.next_due() == 2.0
    t.observe(d / ".metadata.tmp", 1.2)  # the rename's events, arriving late
    t.observe(d / ".metadata", 1.2)
    out = t.due(2.2)
    assert [(x.path, x.status) for x in out] == [(d, "ready")]
    assert out[0].signature == signature_of(walk(d) or {})
    assert t.due(100.0) == [] and t.next_due() is None
