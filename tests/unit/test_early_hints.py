"""Tracker early-snapshot hints: when a checkpoint may be snapshotted during its quiet
period, and when that snapshot must be taken back. Real files, a fake clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cpvd.watch.settle import Hint, Tracker, signature_of, walk


def kinds(t: Tracker) -> list[tuple[str, str]]:
    return [(h.what, h.path.name) for h in t.hints()]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "ck"
    r.mkdir()
    return r


def test_a_file_renamed_in_is_offered_with_its_signature(root: Path) -> None:
    f = root / "epoch-1.pt"
    f.write_bytes(b"x" * 100)
    t = Tracker(root, 2.0)
    t.observe(f, 0.0, modified=False)  # a rename-in arrives as "created" only
    files = walk(f)
    assert files is not None
    assert t.hints() == [Hint(f, "offer", signature_of(files))]
    assert t.hints() == []  # handed out once


def test_a_file_being_written_is_offered_only_once_closed(root: Path) -> None:
    f = root / "epoch-1.pt"
    f.write_bytes(b"x" * 100)
    t = Tracker(root, 2.0)
    t.observe(f, 0.0, modified=True)  # created and written in the same tick
    t.observe(f, 0.5, modified=True)
    assert kinds(t) == []
    t.observe(f, 1.0, closed=True, modified=True)
    assert kinds(t) == [("offer", "epoch-1.pt")]


def test_a_write_after_the_offer_takes_it_back(root: Path) -> None:
    f = root / "epoch-1.pt"
    f.write_bytes(b"x" * 100)
    t = Tracker(root, 2.0)
    t.observe(f, 0.0, modified=False)
    # the same size and mtime: only the event tells that bytes changed
    st = f.stat()
    f.write_bytes(b"y" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    t.observe(f, 0.5, modified=True)
    assert kinds(t) == [("offer", "epoch-1.pt"), ("drop", "epoch-1.pt")]
    t.observe(f, 0.7, modified=True)
    assert kinds(t) == []  # taken back once


def test_a_directory_keeps_its_offer_through_events_that_change_nothing(root: Path) -> None:
    d = root / "checkpoint-5"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a")
    t = Tracker(root, 2.0)
    t.observe(d, 0.0, modified=False)
    t.observe(d / "a.bin", 0.0, modified=False)  # watchdog's sub-events of a moved-in dir
    assert kinds(t) == [("offer", "checkpoint-5")]
    (d / "b.bin").write_bytes(b"b")
    t.observe(d / "b.bin", 0.1, modified=False)  # a new file: not what was offered
    assert kinds(t) == [("drop", "checkpoint-5")]


def test_an_empty_checkpoint_is_never_offered(root: Path) -> None:
    f = root / "epoch-1.pt"
    f.write_bytes(b"")
    d = root / "checkpoint-1"
    d.mkdir()
    t = Tracker(root, 2.0)
    t.observe(f, 0.0, modified=False)
    t.observe(d, 0.0, modified=False)
    assert kinds(t) == []


def test_ready_hands_the_offer_over_without_a_drop(root: Path) -> None:
    f = root / "epoch-1.bin"
    f.write_bytes(b"x" * 100)
    t = Tracker(root, 1.0)
    t.observe(f, 0.0, modified=False)
    assert [d.status for d in t.due(1.0)] == ["ready"]
    assert kinds(t) == [("offer", "epoch-1.bin")]
    t.observe(f, 2.0, closed=True, modified=False)  # a reader closed it again: re-offered
    assert kinds(t) == [("offer", "epoch-1.bin")]
    assert t.due(3.0) == []  # the same signature is not emitted twice...
    assert kinds(t) == [("drop", "epoch-1.bin")]  # ...so that offer is of no use


@pytest.mark.parametrize("how", ["vanished", "invalid", "rescan", "overflow", "forget"])
def test_offers_are_taken_back(root: Path, how: str) -> None:
    f = root / "model.safetensors"
    f.write_bytes(b"\xff" * 64)  # not a valid safetensors header: settles as waiting
    t = Tracker(root, 1.0)
    t.observe(f, 0.0, modified=False)
    assert kinds(t) == [("offer", f.name)]
    if how == "vanished":
        f.unlink()
        assert t.due(1.0) == []
    elif how == "invalid":
        assert [d.status for d in t.due(1.0)] == ["waiting"]
    elif how == "rescan":  # changed without an event, seen by a rescan
        f.write_bytes(b"\xff" * 65)
        t.scan(0.5)
    elif how == "overflow":  # events were lost: nothing offered can be trusted
        t.scan(0.5, events_lost=True)
    else:
        t.forget(f)
    assert kinds(t) == [("drop", f.name)]
