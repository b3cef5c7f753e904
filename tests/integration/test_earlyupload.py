"""Early uploads: each file of a snapshot is stored as soon as its copy is hashed.

Real snapshot store, real hashing, real storage backends (a local DVC remote, and moto's S3
server for the staging-copy-renamed-under-the-upload case); the job's own upload step then
skips what the early uploads stored.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cpvd.errors import StorageError
from cpvd.pipeline.file_upload import FileUploads
from cpvd.pipeline.snapshot import STAGING_PREFIX, SnapshotStore
from cpvd.storage import LocalStorage, Storage, put_checkpoint
from cpvd.storage.base import Progress
from cpvd.storage.hashing import StreamHasher, hash_checkpoint


@pytest.fixture
def s3_storage(moto_server: str, s3_bucket: str) -> Iterator[Storage]:
    from cpvd.config.model import StorageConfig
    from cpvd.storage.s3 import S3Storage

    st = S3Storage(
        StorageConfig(
            url=f"s3://{s3_bucket}/cpv", endpoint_url=moto_server, part_size_mb=5, concurrency=4
        )
    )
    yield st
    st.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    ex = ThreadPoolExecutor(1, thread_name_prefix="test-early")
    yield ex
    ex.shutdown(wait=True)


class Recording:
    """A real LocalStorage that also records which objects were put, and can fail on one."""

    def __init__(self, inner: LocalStorage, fail_md5: str | None = None) -> None:
        self.inner = inner
        self.fail_md5 = fail_md5
        self.outage = True
        self.puts: list[str] = []
        self.lock = threading.Lock()

    def put_file(self, md5: str, src: Path, size: int, progress: Progress | None = None) -> None:
        if md5 == self.fail_md5:
            raise StorageError("injected outage", outage=self.outage)
        with self.lock:
            self.puts.append(md5)
        self.inner.put_file(md5, src, size, progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_dir(root: Path, sizes: list[int]) -> Path:
    root.mkdir(parents=True)
    for i, size in enumerate(sizes):
        (root / f"shard-{i}.bin").write_bytes(os.urandom(size))
    return root


def snapshot_with_batch(
    store: SnapshotStore, src: Path, key: str, early: FileUploads, seen: list[str] | None = None
) -> tuple[Path, Any, Any]:
    batch = early.batch()

    def on_hashed(rel: str, md5: str, size: int, path: Path) -> None:
        assert path.exists()  # the staging copy is there while the callback runs
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5
        if seen is not None:
            seen.append(rel)
        batch.on_hashed(rel, md5, size, path)

    hasher = StreamHasher(on_hashed=on_hashed)
    snap = store.take(
        src,
        key,
        on_chunk=hasher.on_chunk,
        on_restart=hasher.on_restart,
        on_file=pinned(hasher, batch),
    )
    return snap, hasher.result(snap), batch


def pinned(hasher: StreamHasher, batch: Any) -> Any:
    """What the controller passes as ``on_file``: link the copy, then tell the hasher."""
    return lambda rel, path: hasher.on_file(rel, batch.on_file(rel, path))


def test_directory_files_are_stored_while_the_snapshot_is_taken(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    storage = Recording(LocalStorage(tmp_path / "remote"))
    early = FileUploads(lambda: storage, store.root, pool)
    src = make_dir(tmp_path / "ws" / "checkpoint-500", [3 << 20, 1 << 20, 0, 12345])
    seen: list[str] = []
    snap, content, batch = snapshot_with_batch(store, src, "job1", early, seen)

    assert content == hash_checkpoint(snap)
    assert seen == sorted(e.relpath for e in content.entries)  # one call per file, in order
    stored = batch.stored(timeout=60)
    assert stored == {e.md5 for e in content.entries}
    for e in content.entries:  # byte-exact objects in the DVC layout
        assert storage.inner.verify(e.md5)
    # the links the uploads read from are gone; only the snapshot is left in the store
    assert [p.name for p in store.root.iterdir()] == ["job1"]

    # the job's own upload step then stores only the manifest
    storage.puts.clear()
    put_checkpoint(storage, snap, content, skip=stored)  # type: ignore[arg-type]
    assert storage.puts == []
    assert storage.inner.has(content.md5)  # the .dir manifest


def test_a_failed_early_upload_is_left_to_the_job(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    src = make_dir(tmp_path / "ws" / "ck", [2 << 20, 2 << 20])
    want = hash_checkpoint(src)
    bad = want.entries[0].md5
    storage = Recording(LocalStorage(tmp_path / "remote"), fail_md5=bad)
    early = FileUploads(lambda: storage, store.root, pool)
    snap, content, batch = snapshot_with_batch(store, src, "job1", early)

    stored = batch.stored(timeout=60)
    assert stored == {want.entries[1].md5}
    assert not storage.inner.has(bad)
    # an unreachable store is this attempt's failure: the worker raises it and backs off
    assert batch.outage is not None and "injected outage" in batch.outage.message
    storage.fail_md5 = None  # the outage is over by the time the job runs
    storage.puts.clear()
    put_checkpoint(storage, snap, content, skip=stored)  # type: ignore[arg-type]
    assert storage.puts == [bad]
    assert all(storage.inner.verify(e.md5) for e in content.entries)
    assert not [p for p in store.root.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_disabled_batch_uploads_nothing(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    storage = Recording(LocalStorage(tmp_path / "remote"))
    early = FileUploads(lambda: storage, store.root, pool)
    src = tmp_path / "epoch-1.pt"
    src.write_bytes(os.urandom(1 << 20))
    batch = early.batch()
    batch.enabled = False  # e.g. the artifact is paused
    hasher = StreamHasher(on_hashed=batch.on_hashed)
    snap = store.take(src, "k", on_chunk=hasher.on_chunk, on_file=pinned(hasher, batch))
    assert hasher.result(snap) == hash_checkpoint(snap)
    assert batch.futures() == [] and batch.stored() == set()
    assert storage.puts == []


def test_progress_reaches_a_listener_that_comes_late(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    storage = Recording(LocalStorage(tmp_path / "remote"))
    early = FileUploads(lambda: storage, store.root, pool)
    src = tmp_path / "epoch-2.pt"
    src.write_bytes(os.urandom(3 << 20))
    _snap, content, batch = snapshot_with_batch(store, src, "k", early)
    batch.stored(timeout=60)
    got: list[int] = []
    batch.listen(got.append)  # the job claims the checkpoint after the upload finished
    assert sum(got) == content.size


def test_restarted_snapshot_uploads_the_bytes_it_finally_took(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """The source changes during the first copy: whatever the first attempt stored is
    content-addressed (harmless); the version's objects are those of the final snapshot."""
    store = SnapshotStore(tmp_path / "snaps")
    storage = Recording(LocalStorage(tmp_path / "remote"))
    early = FileUploads(lambda: storage, store.root, pool)
    src = make_dir(tmp_path / "ws" / "ck", [1 << 20, 1 << 20])
    changed = threading.Event()
    batch = early.batch()

    def on_hashed(rel: str, md5: str, size: int, path: Path) -> None:
        batch.on_hashed(rel, md5, size, path)
        if not changed.is_set():  # the trainer rewrites a shard after the first was copied
            changed.set()
            (src / "shard-1.bin").write_bytes(os.urandom(1 << 20))

    hasher = StreamHasher(on_hashed=on_hashed)
    snap = store.take(
        src,
        "k",
        on_chunk=hasher.on_chunk,
        on_restart=hasher.on_restart,
        on_file=pinned(hasher, batch),
    )
    content = hasher.result(snap)
    assert content is not None and content == hash_checkpoint(snap)
    stored = batch.stored(timeout=60)
    assert {e.md5 for e in content.entries} <= stored
    for e in content.entries:
        assert storage.inner.verify(e.md5)


def test_early_upload_to_s3_survives_the_staging_rename(
    tmp_path: Path, pool: ThreadPoolExecutor, s3_storage: Storage
) -> None:
    """A multipart upload reopens its file per part; the staging copy is renamed when the
    snapshot commits, so uploads read from a link that outlives the rename."""
    store = SnapshotStore(tmp_path / "snaps")
    early = FileUploads(lambda: s3_storage, store.root, pool)
    src = tmp_path / "epoch-3.pt"
    src.write_bytes(os.urandom(21 << 20))  # several 5 MiB parts
    _snap, content, batch = snapshot_with_batch(store, src, "k", early)
    assert batch.stored(timeout=120) == {content.md5}
    assert s3_storage.verify(content.md5)


def test_a_refusal_is_not_an_outage(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """Access denied and the like: the job's own upload meets it and reports it."""
    store = SnapshotStore(tmp_path / "snaps")
    src = tmp_path / "epoch-4.pt"
    src.write_bytes(os.urandom(1 << 20))
    storage = Recording(LocalStorage(tmp_path / "remote"), fail_md5=hash_checkpoint(src).md5)
    storage.outage = False
    early = FileUploads(lambda: storage, store.root, pool)
    _snap, _content, batch = snapshot_with_batch(store, src, "k", early)
    assert batch.stored(timeout=60) == set()
    assert batch.outage is None


def test_cancel_stops_a_running_s3_upload_and_aborts_it(
    tmp_path: Path, pool: ThreadPoolExecutor, s3_storage: Storage, moto_server: str, s3_bucket: str
) -> None:
    """A job skipped while its early upload runs (the same content handled meanwhile):
    the upload stops and leaves no multipart upload, no object and no link behind."""
    import boto3

    store = SnapshotStore(tmp_path / "snaps")
    early = FileUploads(lambda: s3_storage, store.root, pool)
    src = tmp_path / "epoch-5.pt"
    src.write_bytes(os.urandom(64 << 20))  # 13 parts of 5 MiB, 4 at a time
    _snap, content, batch = snapshot_with_batch(store, src, "k", early)
    moving = threading.Event()
    batch.listen(lambda n: moving.set())
    assert moving.wait(60), "the early upload never started"
    running = batch.cancel()
    for f in running:
        f.result(timeout=120)  # ends (with None: nothing stored), never hangs
    assert batch.stored(timeout=0) == set()
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    try:
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    finally:
        client.close()
    assert s3_storage.size_of(content.md5) is None
    assert [p.name for p in store.root.iterdir()] == ["k"]


def test_a_cancelled_batch_starts_nothing(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    storage = Recording(LocalStorage(tmp_path / "remote"))
    early = FileUploads(lambda: storage, store.root, pool)
    src = make_dir(tmp_path / "checkpoint-7", [1 << 20, 2 << 20])
    batch = early.batch()
    batch.cancel()
    hasher = StreamHasher(on_hashed=batch.on_hashed)
    snap = store.take(src, "k", on_chunk=hasher.on_chunk, on_restart=hasher.on_restart,
                      on_file=pinned(hasher, batch))  # fmt: skip
    hasher.result(snap)
    pool.submit(lambda: None).result(timeout=60)  # every queued upload has had its turn
    assert batch.stored(timeout=60) == set()
    assert storage.puts == []
    assert [p.name for p in store.root.iterdir()] == ["k"]


def test_bytes_of_a_failed_early_upload_are_taken_back(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """The job stores a failed file again from byte 0; the bytes the failed attempt reported
    are taken back, so the job's progress ends at its total instead of past it."""

    class HalfThenFail(Recording):
        def put_file(
            self, md5: str, src: Path, size: int, progress: Progress | None = None
        ) -> None:
            if md5 == self.fail_md5:
                assert progress is not None
                progress(size // 2)
                raise StorageError("connection reset mid-upload", outage=False)
            self.inner.put_file(md5, src, size, progress)

    store = SnapshotStore(tmp_path / "snaps")
    src = make_dir(tmp_path / "ws" / "ck", [2 << 20, 3 << 20])
    want = hash_checkpoint(src)
    storage = HalfThenFail(LocalStorage(tmp_path / "remote"), fail_md5=want.entries[0].md5)
    early = FileUploads(lambda: storage, store.root, pool)
    seen: list[int] = []
    _snap, _content, batch = snapshot_with_batch(store, src, "k", early)
    stored = batch.stored(timeout=60)
    batch.listen(seen.append)  # the job starts listening after the uploads ended
    assert stored == {want.entries[1].md5}
    assert sum(seen) == 3 << 20  # the successful file only

    seen2: list[int] = []
    batch2 = early.batch()
    batch2.listen(seen2.append)  # listening while the failure happens: + then -
    hasher = StreamHasher(on_hashed=batch2.on_hashed)
    snap2 = store.take(src, "k2", on_chunk=hasher.on_chunk, on_restart=hasher.on_restart,
                       on_file=pinned(hasher, batch2))  # fmt: skip
    hasher.result(snap2)
    batch2.stored(timeout=60)
    # (the other file is stored already: no bytes for it) the failed half, then taken back
    assert seen2 == [1 << 20, -(1 << 20)]


@pytest.mark.parametrize("then", ["release", "cancel"])
def test_held_uploads_wait_for_release_and_cancel_removes_their_links(
    tmp_path: Path, pool: ThreadPoolExecutor, then: str
) -> None:
    """A speculative snapshot (cpvd.pipeline.speculative_snapshot) hashes with its uploads held:
    nothing is stored before the checkpoint is known complete, and a dropped one leaves no
    link."""
    store = SnapshotStore(tmp_path / "snaps")
    storage = Recording(LocalStorage(tmp_path / "remote"))
    early = FileUploads(lambda: storage, store.root, pool)
    src = make_dir(tmp_path / "ck", [3000, 5000])
    batch = early.batch()
    batch.hold()
    hasher = StreamHasher(on_hashed=batch.on_hashed)
    snap = store.take(src, "k", on_chunk=hasher.on_chunk, on_file=pinned(hasher, batch))
    content = hasher.result(snap)
    assert content is not None
    links = [p for p in store.root.iterdir() if p.name.startswith(f"{STAGING_PREFIX}up-")]
    assert len(links) == 2  # the copies are pinned, waiting
    assert batch.futures() == [] and storage.puts == []
    if then == "release":
        batch.release()
        assert batch.stored(timeout=30) == {e.md5 for e in content.entries}
        assert sorted(storage.puts) == sorted(e.md5 for e in content.entries)
    else:
        batch.cancel()
        batch.release()  # too late: nothing starts
        assert batch.futures() == [] and storage.puts == []
    assert not [p for p in store.root.iterdir() if p.name.startswith(f"{STAGING_PREFIX}up-")]
