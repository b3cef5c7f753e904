"""Follow checkpoint files while their writers write them, so the md5 is done at the end.

Why: a checkpoint's bytes pass under the daemon's eyes while a trainer writes them, either
in place (``torch.save(path)``, closed once) or under a temporary name inside the watch
renamed when whole (safetensors, Lightning, HF). Objects are named by their md5, so hashing
only after the writer's last act put the whole hash (and a copy) before the upload. Here
each write event makes the follow thread copy the appended bytes into a private file in the
snapshot store and feed them to the md5 (cpvd.pipeline.follow_copy); when the checkpoint is
*proven* complete (cpvd.watch.settle: an atomic rename of a temporary name, or a close
after writing a format that proves itself whole), :meth:`Follower.finish` catches up the
last bytes, compares the copy with the source (a writer may have sought back and rewritten
earlier bytes: the hash resumes from the first chunk that differs) and hands the copy over
as the checkpoint's snapshot.

Followed files are keyed by inode, so the state carries over a rename inside the watch
(``x.safetensors.tmp`` -> ``x.safetensors``). Safe like the speculative snapshots it feeds
(cpvd.pipeline.speculative_snapshot): nothing is uploaded from here; a file is opened
without following links; :meth:`finish` hands over only a copy that equals the source file
at the path now (inode, size, mtime), else None and the usual snapshot is taken; the bytes
held count against the snapshot store's limit, and a file is not followed (or dropped)
when it would take the store past its limit or use over half the free space; a file
deleted, or not written for ``expiry`` seconds, is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cpvd.errors import CpvError
from cpvd.pipeline.file_upload import UploadBatch
from cpvd.pipeline.follow_copy import FollowedFile, SourceChanged
from cpvd.pipeline.snapshot import STAGING_PREFIX, Layout, SnapshotStore
from cpvd.storage.hashing import ContentHash, FileEntry
from cpvd.storage.nofollow import FILE_FLAGS
from cpvd.watch.follow_names import is_followed
from cpvd.watch.units import UnitRules

log = logging.getLogger(__name__)

#: chunks copied per followed file before the follow thread looks at new events again
STEP_CHUNKS = 4
#: a followed file not written for this long is dropped (its writer died or moved on)
EXPIRY = 120.0
#: smaller files are not followed: their hash at the end costs little (~20 ms per 16 MiB),
#: and a burst of small checkpoints must not open a copy and a descriptor each
MIN_BYTES = 16 * 1024 * 1024
#: files handed over (or found not followed) remembered, so late events do not follow them
MAX_DONE = 1024

_Key = tuple[int, int]  # (st_dev, st_ino)


@dataclass(eq=False)
class _Followed:
    file: FollowedFile
    hold: str  # its name in the snapshot store's reservations
    staging: Path
    last_write: float
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class Follower:
    """Owns the follow thread, the followed files and their copies until :meth:`finish`
    hands one over (or it is dropped). Fed by the watcher's thread (:meth:`event`)."""

    store: SnapshotStore
    expiry: float = EXPIRY
    min_bytes: int = MIN_BYTES

    def __post_init__(self) -> None:
        self._events: queue.Queue[tuple[Path, UnitRules, Path, bool] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._files: dict[_Key, _Followed] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        #: (dev, ino) -> (size, mtime_ns) of files already snapshotted by :meth:`finish`
        self._done: dict[_Key, tuple[int, int]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the follow thread (the first :meth:`event` does, when nobody did)."""
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name="cpvd-follow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the follow thread and drop every followed file (their copies are deleted)."""
        with self._lock:
            thread, self._thread, self._stopped = self._thread, None, True
        if thread is not None:
            self._events.put(None)
            thread.join()
        with self._lock:
            gone, self._files = list(self._files.values()), {}
        for f in gone:
            self._drop(f)

    # -- feeding (watcher thread) ---------------------------------------------------------

    def event(self, root: Path, rules: UnitRules, path: Path, kinds: set[str]) -> None:
        """Bytes may have been written to ``path`` (below watch ``root``): returns at once."""
        if kinds & {"created", "modified", "closed"}:
            if self._thread is None:
                self.start()
            # only a write starts following: a file renamed in from outside arrives whole
            self._events.put((root, rules, path, "modified" in kinds))

    def following(self) -> int:
        with self._lock:
            return len(self._files)

    # -- handing over (snapshot thread) ---------------------------------------------------

    def finish(
        self, path: Path, key: str, batch: UploadBatch | None = None
    ) -> tuple[Path, ContentHash, Layout] | None:
        """``path`` is proven complete: its followed copy as snapshot ``key`` of the store,
        with its md5 and layout (the stat the claim compares); None when it was not followed
        or its copy cannot be trusted (the caller then snapshots it as usual)."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        with self._lock:
            f = self._files.pop((st.st_dev, st.st_ino), None)
            if len(self._done) >= MAX_DONE:
                self._done.clear()
            self._done[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns)
        if f is None:
            return None
        f.stop.set()
        try:
            with f.file.lock:
                md5, fst = f.file.settle()
            now = os.lstat(path)
            if (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) != (
                fst.st_ino, fst.st_dev, fst.st_size, fst.st_mtime_ns
            ):
                raise SourceChanged(f"{path} is not the file followed any more")
            f.file.close()
            snap = self.store.adopt(key, f.file.dst, path.name)
        except (SourceChanged, OSError, CpvError) as exc:
            log.info("following %s did not give its snapshot (%s); taking it again", path, exc)
            self._drop(f)
            return None
        finally:
            self.store.hold_partial(f.hold, 0)
        log.debug("%s: hashed while written (%d bytes)", path, now.st_size)
        if batch is not None:
            link = batch.on_file(path.name, snap)
            if link is not None:
                batch.on_hashed(path.name, md5, now.st_size, link)
        content = ContentHash.of_file(FileEntry(path.name, md5, now.st_size))
        return snap, content, [(path.name, now.st_size, now.st_mtime_ns, now.st_ino)]

    def forget(self, path: Path) -> None:
        """Stop following ``path`` (it was versioned, or snapshotted another way)."""
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            with self._lock:
                f = self._files.pop((st.st_dev, st.st_ino), None)
            if f is not None:
                self._drop(f)

    # -- the follow thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            busy = self._lagging()
            try:
                first = self._events.get(timeout=0 if busy else min(self.expiry, 5.0))
            except queue.Empty:
                first = ()  # type: ignore[assignment]
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._events.get_nowait())
            if None in batch:
                return
            seen: dict[Path, tuple[Path, UnitRules, bool]] = {}
            for item in batch:
                if item:
                    root, rules, path, written = item
                    seen[path] = (root, rules, written or seen.get(path, (0, 0, False))[2])
            try:
                for path, (root, rules, written) in seen.items():
                    self._notice(root, rules, path, written)
                self._step()
                self._sweep()
            except Exception:  # the thread must outlive any one bad file
                log.exception("following a checkpoint failed; continuing")

    def _notice(self, root: Path, rules: UnitRules, path: Path, written: bool) -> None:
        """Start following ``path`` when it is written and worth it; mark written ones."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        k = (st.st_dev, st.st_ino)
        with self._lock:
            f = self._files.get(k)
            if f is not None:
                f.last_write = time.monotonic()
                return
            if self._done.get(k) == (st.st_size, st.st_mtime_ns):
                return  # an event left over from a file snapshotted since
        if not written or st.st_size < self.min_bytes or not is_followed(root, rules, path):
            return
        if not self.store.has_room(st.st_size):
            return
        try:
            fd = os.open(path, FILE_FLAGS)
        except OSError:
            return
        if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
            os.close(fd)
            return
        fid = uuid.uuid4().hex
        staging = self.store.root / f"{STAGING_PREFIX}follow-{fid}"
        try:
            staging.mkdir(mode=0o700)
            ff = FollowedFile(fd, staging / path.name, flush=self.store.writeback.start)
        except OSError:
            os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
            return
        with self._lock:
            self._files[k] = _Followed(ff, f"follow-{fid}", staging, time.monotonic())
        log.debug("following %s as it is written", path)

    def _lagging(self) -> bool:
        with self._lock:
            files = list(self._files.values())
        for f in files:
            with contextlib.suppress(OSError):
                if os.fstat(f.file.sfd).st_size > f.file.copied:
                    return True
        return False

    def _step(self) -> None:
        """Copy a few chunks of each followed file that grew."""
        with self._lock:
            files = list(self._files.values())
        for f in files:
            with f.file.lock:
                if f.stop.is_set():
                    continue
                try:
                    size = os.fstat(f.file.sfd).st_size
                    if not self.store.has_room(max(0, size - f.file.copied)):
                        raise OSError("the snapshot store is short of room")
                    limit = f.file.copied + STEP_CHUNKS * f.file.md5.chunk
                    f.file.catch_up(f.stop, limit=limit)
                except OSError as exc:
                    log.debug("stopped following %s: %s", f.file.dst.name, exc)
                    self._forget(f)
                    continue
                self.store.hold_partial(f.hold, f.file.copied)

    def _sweep(self) -> None:
        """Drop files deleted (no name left) or not written for ``expiry`` seconds."""
        now = time.monotonic()
        with self._lock:
            files = list(self._files.values())
        for f in files:
            try:
                gone = os.fstat(f.file.sfd).st_nlink == 0
            except OSError:
                gone = True
            if gone or now - f.last_write > self.expiry:
                self._forget(f)

    def _forget(self, f: _Followed) -> None:
        """Drop ``f`` if it is still ours (:meth:`finish` may have taken it meanwhile)."""
        with self._lock:
            keys = [k for k, v in self._files.items() if v is f]
            for k in keys:
                del self._files[k]
        if keys:
            self._drop(f)

    def _drop(self, f: _Followed) -> None:
        f.stop.set()
        f.file.close()
        shutil.rmtree(f.staging, ignore_errors=True)
        self.store.hold_partial(f.hold, 0)
