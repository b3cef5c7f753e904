"""The follow thread on real files (cpvd.pipeline.follow), fed events by hand: the state
carries over a rename, only written files worth it are followed, and a deleted temporary
file leaves nothing behind in the snapshot store."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.pipeline.follow import Follower
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.watch.units import UnitRules

AUTO = UnitRules(layout="auto")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, SnapshotStore, Follower]]:
    watch = tmp_path / "ck"
    watch.mkdir()
    store = SnapshotStore(tmp_path / "snapshots")
    follower = Follower(store, expiry=60.0, min_bytes=1)
    yield watch, store, follower
    follower.stop()


def wait(pred: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def staged(store: SnapshotStore) -> list[str]:
    return sorted(n for n in os.listdir(store.root) if n.startswith(".staging-follow-"))


def test_followed_under_a_temporary_name_handed_over_under_the_final_one(
    setup: tuple[Path, SnapshotStore, Follower],
) -> None:
    watch, store, follower = setup
    tmp, final = watch / "x.safetensors.tmp", watch / "x.safetensors"
    data = os.urandom(3 * 1024 * 1024)
    with open(tmp, "wb") as f:
        f.write(data)
    follower.event(watch, AUTO, tmp, {"created", "modified"})
    wait(lambda: follower.following() == 1, "following")
    wait(lambda: store.used_bytes() == len(data), "caught up")
    os.rename(tmp, final)
    got = follower.finish(final, "k1")
    assert got is not None
    snap, content, layout = got
    assert snap == store.root / "k1" / "x.safetensors"
    assert snap.read_bytes() == data
    assert content.md5 == hashlib.md5(data).hexdigest()
    st = final.stat()
    assert layout == [("x.safetensors", st.st_size, st.st_mtime_ns, st.st_ino)]
    assert store.unchanged(final, layout)
    assert follower.following() == 0 and staged(store) == []


def test_not_followed_when_not_written_or_not_a_checkpoint(
    setup: tuple[Path, SnapshotStore, Follower],
) -> None:
    watch, store, follower = setup
    (watch / "epoch-1.pt").write_bytes(b"x" * 100)  # renamed in: "created" only
    (watch / "train.log").write_bytes(b"step 1\n")
    follower.event(watch, AUTO, watch / "epoch-1.pt", {"created"})
    follower.event(watch, AUTO, watch / "train.log", {"modified"})
    time.sleep(0.3)
    assert follower.following() == 0
    assert follower.finish(watch / "epoch-1.pt", "k2") is None
    assert staged(store) == []


def test_a_deleted_temporary_file_is_dropped(
    setup: tuple[Path, SnapshotStore, Follower],
) -> None:
    watch, store, follower = setup
    tmp = watch / "model.pt.part"
    tmp.write_bytes(os.urandom(100_000))
    follower.event(watch, AUTO, tmp, {"modified"})
    wait(lambda: follower.following() == 1, "following")
    tmp.unlink()
    follower.event(watch, AUTO, tmp, {"modified"})  # any event wakes the sweep
    wait(lambda: follower.following() == 0, "dropped")
    assert staged(store) == [] and store.used_bytes() == 0


def test_small_files_are_not_followed(tmp_path: Path) -> None:
    watch = tmp_path / "ck"
    watch.mkdir()
    store = SnapshotStore(tmp_path / "snapshots")
    follower = Follower(store)  # the default threshold: a burst of small files costs nothing
    try:
        for i in range(3):
            (watch / f"ck-{i}.bin").write_bytes(os.urandom(1024 * 1024))
            follower.event(watch, AUTO, watch / f"ck-{i}.bin", {"created", "modified"})
        time.sleep(0.3)
        assert follower.following() == 0 and staged(store) == []
    finally:
        follower.stop()
