"""SnapshotStore on the real filesystem: exact bytes, isolation from the source, space bound."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cpvd.errors import InputError, IntegrityError, NotFound
from cpvd.pipeline.snapshot import SnapshotSpaceTimeout, SnapshotStore
from cpvd.pipeline.writeback import Writeback
from cpvd.storage.hashing import StreamHasher, hash_checkpoint


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snap")


def test_file_snapshot_is_identical_and_independent(tmp_path: Path, store: SnapshotStore) -> None:
    src = tmp_path / "ws" / "last.ckpt"
    src.parent.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    snap = store.take(src, "job1")
    assert snap == tmp_path / "snap" / "job1" / "last.ckpt"
    assert snap.read_bytes() == data
    assert os.stat(snap).st_ino != os.stat(src).st_ino  # never a hardlink
    assert os.stat(snap).st_nlink == 1
    # the trainer rewrites last.ckpt in place, then deletes it: the snapshot is untouched
    with open(src, "r+b") as fh:
        fh.write(b"\0" * 4096)
    src.unlink()
    assert snap.read_bytes() == data
    assert store.path("job1") == snap
    assert store.used_bytes() == len(data)
    assert store.keys() == ["job1"]


def test_dir_snapshot_keeps_layout(tmp_path: Path, store: SnapshotStore) -> None:
    src = tmp_path / "checkpoint-500"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(10_000))
    (src / "sub" / "optimizer.pt").write_bytes(os.urandom(5_000))
    (src / "sub" / "deeper" / ".metadata").write_bytes(b"meta")
    (src / "trainer_state.json").write_text("{}")
    expected = tree(src)
    snap = store.take(src, "job2")
    assert snap == tmp_path / "snap" / "job2" / "checkpoint-500"
    assert tree(snap) == expected
    shutil.rmtree(src)  # save_total_limit deletes the old checkpoint
    assert tree(snap) == expected
    assert store.used_bytes() == sum(len(v) for v in expected.values())


def test_on_chunk_sees_exactly_the_snapshot_bytes(tmp_path: Path, store: SnapshotStore) -> None:
    src = tmp_path / "d"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(20_000_000))
    (src / "b").write_bytes(b"small")
    hashes: dict[str, hashlib._Hash] = {}

    def on_chunk(rel: str, chunk: bytes) -> None:
        hashes.setdefault(rel, hashlib.md5()).update(chunk)

    snap = store.take(src, "k", on_chunk=on_chunk, on_restart=hashes.clear)
    assert {r: h.hexdigest() for r, h in hashes.items()} == {
        r: hashlib.md5(b).hexdigest() for r, b in tree(snap).items()
    }


def test_source_changing_during_copy_is_retried_then_refused(
    tmp_path: Path, store: SnapshotStore
) -> None:
    src = tmp_path / "busy.bin"
    src.write_bytes(b"v0" * 1000)
    restarts: list[int] = []
    count = 0

    def writer_in_the_middle(rel: str, chunk: bytes) -> None:
        nonlocal count
        count += 1
        with open(src, "ab") as fh:  # the trainer appends while we copy
            fh.write(b"more")

    with pytest.raises(IntegrityError):
        store.take(src, "k", on_chunk=writer_in_the_middle, on_restart=lambda: restarts.append(1))
    assert len(restarts) >= 2
    assert store.path("k") is None
    assert store.used_bytes() == 0
    assert [p.name for p in store.root.iterdir()] == []  # staging cleaned up


def test_source_change_once_then_stable_succeeds(tmp_path: Path, store: SnapshotStore) -> None:
    src = tmp_path / "flaky.bin"
    src.write_bytes(b"first")
    calls = 0

    def change_once(rel: str, chunk: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            src.write_bytes(b"second, longer")

    snap = store.take(src, "k", on_chunk=change_once)
    assert snap.read_bytes() == b"second, longer"


def test_vanished_source(tmp_path: Path, store: SnapshotStore) -> None:
    with pytest.raises(NotFound):
        store.take(tmp_path / "gone.pt", "k")


@pytest.mark.parametrize("key", ["", ".", "..", "a/b", ".staging-x", "x\0"])
def test_bad_keys_refused(tmp_path: Path, store: SnapshotStore, key: str) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InputError):
        store.take(tmp_path / "f", key)


def test_release_and_recovery(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    s1 = SnapshotStore(tmp_path / "snap")
    s1.take(tmp_path / "f", "keep")
    s1.take(tmp_path / "f", "drop")
    (tmp_path / "snap" / ".staging-crashed-1234").mkdir()  # a crash mid-copy
    s2 = SnapshotStore(tmp_path / "snap")  # a restarted daemon
    assert s2.keys() == ["drop", "keep"]
    assert s2.used_bytes() == 10
    assert not (tmp_path / "snap" / ".staging-crashed-1234").exists()
    s2.release("drop")
    assert s2.keys() == ["keep"] and s2.path("drop") is None
    assert s2.used_bytes() == 5
    s2.release("drop")  # idempotent


def test_set_aside_moves_a_snapshot_out_of_the_store_intact(tmp_path: Path) -> None:
    (tmp_path / "epoch-9.bin").write_bytes(b"only copy")
    store = SnapshotStore(tmp_path / "state" / "snapshots")
    store.take(tmp_path / "epoch-9.bin", "k1")
    moved = store.set_aside("k1", tmp_path / "state" / "orphans" / "t")
    assert moved == tmp_path / "state" / "orphans" / "t" / "k1"
    assert (moved / "epoch-9.bin").read_bytes() == b"only copy"
    assert store.keys() == [] and store.used_bytes() == 0 and store.path("k1") is None
    assert SnapshotStore(tmp_path / "state" / "snapshots").keys() == []  # not found again
    with pytest.raises(InputError):
        store.set_aside("../x", tmp_path)


def test_take_replaces_existing_key(tmp_path: Path, store: SnapshotStore) -> None:
    (tmp_path / "f").write_bytes(b"one")
    store.take(tmp_path / "f", "k")
    (tmp_path / "f").write_bytes(b"three")
    snap = store.take(tmp_path / "f", "k")
    assert snap.read_bytes() == b"three"
    assert store.used_bytes() == 5


def test_full_store_waits_for_release(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap", limit_bytes=1000)
    (tmp_path / "a").write_bytes(b"a" * 800)
    (tmp_path / "b").write_bytes(b"b" * 800)
    store.take(tmp_path / "a", "ja")
    with pytest.raises(SnapshotSpaceTimeout):
        store.take(tmp_path / "b", "jb", timeout=0.2)
    result: list[Path] = []
    errors: list[BaseException] = []

    def taker() -> None:
        try:
            result.append(store.take(tmp_path / "b", "jb", timeout=10))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=taker)
    t.start()
    time.sleep(0.2)
    assert result == [] and t.is_alive()  # blocked on space, not failed
    store.release("ja")
    t.join(timeout=10)
    assert not t.is_alive() and errors == []
    assert result[0].read_bytes() == b"b" * 800
    assert store.used_bytes() == 800


def test_oversized_checkpoint_taken_when_store_empty(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap", limit_bytes=10)
    (tmp_path / "big").write_bytes(b"x" * 100)
    assert store.take(tmp_path / "big", "k", timeout=0.1).read_bytes() == b"x" * 100


def test_symlink_inside_dir_is_dereferenced(tmp_path: Path, store: SnapshotStore) -> None:
    src = tmp_path / "run"
    src.mkdir()
    (src / "epoch=3.ckpt").write_bytes(b"weights")
    (src / "last.ckpt").symlink_to("epoch=3.ckpt")
    snap = store.take(src, "k")
    assert not (snap / "last.ckpt").is_symlink()
    assert tree(snap) == {"epoch=3.ckpt": b"weights", "last.ckpt": b"weights"}


# -- hashing while copying (StreamHasher) --------------------------------------------------


def _take_hashed(store: SnapshotStore, src: Path, key: str) -> tuple[Path, object]:
    hasher = StreamHasher()
    try:
        snap = store.take(src, key, on_chunk=hasher.on_chunk, on_restart=hasher.on_restart)
    finally:
        hasher.close()
    return snap, hasher.result(snap)


@pytest.mark.parametrize("size", [0, 1, 8 * 1024 * 1024 + 5])
def test_hash_while_copying_a_file_equals_hashing_the_snapshot(
    tmp_path: Path, store: SnapshotStore, size: int
) -> None:
    src = tmp_path / "epoch-1.pt"
    src.write_bytes(os.urandom(size))
    snap, content = _take_hashed(store, src, "k")
    assert content == hash_checkpoint(snap)
    assert content is not None and content.md5 == hashlib.md5(src.read_bytes()).hexdigest()


def test_hash_while_copying_a_directory_equals_hashing_the_snapshot(
    tmp_path: Path, store: SnapshotStore
) -> None:
    src = tmp_path / "checkpoint-500"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(9 * 1024 * 1024))
    (src / "empty").write_bytes(b"")
    (src / "sub" / "empty2").write_bytes(b"")
    (src / ".metadata").write_bytes(b"dcp")
    (src / "sub" / "deep" / "same.bin").write_bytes(b"dup")
    (src / "sub" / "a.bin").write_bytes(b"dup")
    (src / "link.bin").symlink_to(src / "model.safetensors")
    (src / ".git").write_text("gitdir: elsewhere")  # DVC ignores it; so do both hashes
    snap, content = _take_hashed(store, src, "k")
    expected = hash_checkpoint(snap)
    assert content == expected
    assert expected.nfiles == 7


def test_hash_while_copying_forgets_an_attempt_the_source_changed_under(
    tmp_path: Path, store: SnapshotStore
) -> None:
    src = tmp_path / "flaky.bin"
    src.write_bytes(b"first" * 100_000)
    hasher = StreamHasher()
    calls = 0

    def change_once(rel: str, chunk: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            src.write_bytes(b"second, longer" * 100_000)
        hasher.on_chunk(rel, chunk)

    try:
        snap = store.take(src, "k", on_chunk=change_once, on_restart=hasher.on_restart)
    finally:
        hasher.close()
    content = hasher.result(snap)
    assert calls >= 2
    assert content == hash_checkpoint(snap)
    assert content is not None
    assert content.md5 == hashlib.md5(b"second, longer" * 100_000).hexdigest()


def test_stream_hasher_says_none_when_what_it_saw_is_not_the_snapshot(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    d.mkdir()
    (d / "a").write_bytes(b"abc")
    (d / "b").write_bytes(b"xyz")
    short = StreamHasher()
    short.on_chunk("a", b"abc")
    short.on_chunk("b", b"xy")  # fewer bytes than the file holds
    assert short.result(d) is None
    extra = StreamHasher()
    for rel, data in (("a", b"abc"), ("b", b"xyz"), ("c", b"!")):
        extra.on_chunk(rel, data)
    assert extra.result(d) is None
    missing = StreamHasher()
    missing.on_chunk("a", b"abc")  # b is not empty, yet no bytes of it were seen
    assert missing.result(d) is None


@pytest.mark.parametrize("hashed", [True, False])
def test_copy_falls_back_to_read_write_where_the_kernel_cannot_copy(
    tmp_path: Path, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch, hashed: bool
) -> None:
    """copy_file_range refused (another filesystem type, an old kernel): the read/write
    loop makes the same snapshot and the same hash."""
    import errno

    def refuse(*_: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    src = tmp_path / "epoch-9.pt"
    src.write_bytes(os.urandom(9 * 1024 * 1024 + 5))
    if hashed:
        snap, content = _take_hashed(store, src, "k")
        assert content == hash_checkpoint(snap)
    else:
        snap = store.take(src, "k")
    assert snap.read_bytes() == src.read_bytes()


def test_copy_failing_midway_is_an_error_not_a_short_snapshot(
    tmp_path: Path, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real = os.copy_file_range
    calls = []

    def full_disk_after_one_chunk(src: int, dst: int, count: int, *a: object) -> int:
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, count)

    monkeypatch.setattr(os, "copy_file_range", full_disk_after_one_chunk)
    src = tmp_path / "epoch-10.pt"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    with pytest.raises(OSError) as err:
        _take_hashed(store, src, "k")
    assert err.value.errno == errno.ENOSPC
    assert store.keys() == []  # nothing half-copied is left under the key


def test_unchanged_compares_the_source_with_the_layout_it_was_copied_from(
    tmp_path: Path,
) -> None:
    """What an early snapshot is checked against when its checkpoint is declared complete."""
    store = SnapshotStore(tmp_path / "snaps")
    src = tmp_path / "ck"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 10)
    layouts: list[Any] = []
    store.take(src, "k", on_layout=layouts.append)
    assert len(layouts) == 1 and [r for r, *_ in layouts[0]] == ["a.bin"]
    assert store.unchanged(src, layouts[0])
    # the same name, size and mtime but a new file (an atomic rename-over): not the same
    st = (src / "a.bin").stat()
    (tmp_path / "new.bin").write_bytes(b"b" * 10)
    os.utime(tmp_path / "new.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp_path / "new.bin", src / "a.bin")
    assert not store.unchanged(src, layouts[0])
    store.take(src, "k2", on_layout=layouts.append)
    assert store.unchanged(src, layouts[1])
    (src / "b.bin").write_bytes(b"")  # a file more
    assert not store.unchanged(src, layouts[1])
    shutil.rmtree(src)  # gone
    assert not store.unchanged(src, layouts[1])


def test_has_room_keeps_optional_copies_within_the_limit_and_the_free_space(
    tmp_path: Path,
) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    store = SnapshotStore(tmp_path / "snaps", limit_bytes=100)
    (tmp_path / "f").write_bytes(b"x" * 60)
    assert store.has_room(100)
    store.take(tmp_path / "f", "k")
    assert store.has_room(40) and not store.has_room(41)  # 60 used of 100
    unlimited = SnapshotStore(tmp_path / "snaps2")
    assert unlimited.has_room(1) and not unlimited.has_room(free // 2 + 1)


def test_big_copies_are_flushed_in_the_background_small_ones_left_to_the_kernel(
    tmp_path: Path,
) -> None:
    """Each snapshot file from the threshold up is handed to the writeback thread (the file
    itself, not the source), so its dirty pages do not pile up behind the upload."""
    synced: list[int] = []
    wb = Writeback(min_bytes=1024 * 1024, sync=lambda fd: synced.append(os.fstat(fd).st_ino))
    store = SnapshotStore(tmp_path / "snaps", writeback=wb)
    src = tmp_path / "ck"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(1024 * 1024))
    (src / "sub" / "small.bin").write_bytes(b"s" * 1000)
    (src / "sub" / "huge.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    snap = store.take(src, "k")
    assert wb.wait_idle(10)
    assert sorted(set(synced)) == sorted(
        (snap / rel).stat().st_ino for rel in ("big.bin", "sub/huge.bin")
    )
    single = tmp_path / "one.ckpt"
    single.write_bytes(os.urandom(2 * 1024 * 1024))
    synced.clear()
    snap = store.take(single, "k2", on_chunk=lambda rel, data: None)  # read back too
    assert wb.wait_idle(10)
    assert synced == [snap.stat().st_ino]
    assert snap.read_bytes() == single.read_bytes()
