"""Issue 15 #1 and #14: a snapshot never follows a symlink swapped in after the listing, and
is on disk (files and directory entries synced) before it is handed over."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cpvd.errors import InputError, IntegrityError
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.storage.hashing import hash_checkpoint

SIZE = 64 * 1024
ORIGINAL = b"o" * SIZE
SECRET = b"S" * SIZE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SnapshotStore]:
    s = SnapshotStore(tmp_path / "snap")
    yield s
    assert s.writeback.wait_idle(10)


def _tree(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {root.name: root.read_bytes()}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


class Swap:
    """Replace ``victim`` by ``make(victim)`` once, and put the original back once."""

    def __init__(self, victim: Path, make: Callable[[Path], None]) -> None:
        self.victim, self.make = victim, make
        self.aside = victim.with_name(victim.name + ".aside")
        self.swapped = self.restored = False

    def swap(self) -> None:
        if not self.swapped:
            self.swapped = True
            os.rename(self.victim, self.aside)
            self.make(self.victim)

    def restore(self) -> None:
        if self.swapped and not self.restored:
            self.restored = True
            if self.victim.is_dir() and not self.victim.is_symlink():
                shutil.rmtree(self.victim)
            else:
                self.victim.unlink()
            os.rename(self.aside, self.victim)


def _secret(tmp_path: Path, like: Path) -> Path:
    """A file only the daemon's user could read, with the victim's size and mtime."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    st = os.stat(like)
    os.utime(secret, ns=(st.st_atime_ns, st.st_mtime_ns))
    return secret


def _race_dir(tmp_path: Path) -> Path:
    src = tmp_path / "watch" / "race1"
    src.mkdir(parents=True)
    (src / "a_big").write_bytes(b"a" * SIZE)
    (src / "b.bin").write_bytes(ORIGINAL)
    (src / "c_big").write_bytes(b"c" * SIZE)
    return src


def _symlink_to(target: Path) -> Callable[[Path], None]:
    return lambda p: p.symlink_to(target)


def _copy_of(target: Path) -> Callable[[Path], None]:
    """A regular file with the secret's bytes, size and mtime (another inode)."""

    def make(p: Path) -> None:
        shutil.copy2(target, p)

    return make


@pytest.mark.parametrize("kind", ["symlink", "other file"])
def test_file_swapped_during_a_directory_copy_is_never_copied(
    tmp_path: Path, store: SnapshotStore, kind: str
) -> None:
    # the reproduction: b.bin swapped while a_big is copied, put back during c_big
    src = _race_dir(tmp_path)
    secret = _secret(tmp_path, src / "b.bin")
    race = Swap(src / "b.bin", _symlink_to(secret) if kind == "symlink" else _copy_of(secret))

    def on_chunk(rel: str, data: bytes) -> None:
        if rel == "a_big":
            race.swap()
        elif rel == "c_big":
            race.restore()

    snap = store.take(src, "k", on_chunk=on_chunk, on_restart=race.restore)
    assert race.swapped and race.restored
    assert _tree(snap) == {"a_big": b"a" * SIZE, "b.bin": ORIGINAL, "c_big": b"c" * SIZE}
    assert SECRET[:1024] not in (snap / "b.bin").read_bytes()


def test_single_file_swapped_for_a_symlink_before_it_is_opened(
    tmp_path: Path, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "watch" / "epoch-3.pt"
    src.parent.mkdir()
    src.write_bytes(ORIGINAL)
    race = Swap(src, _symlink_to(_secret(tmp_path, src)))
    real_open = os.open

    def racing_open(path: object, *args: object, **kwargs: object) -> int:
        # between the listing (lstat) and the open of the source: the window of the race
        if os.fspath(path).endswith("epoch-3.pt") and not kwargs.get("dir_fd"):  # type: ignore[call-overload]
            flags = args[0] if args else kwargs.get("flags", 0)
            if not (int(flags) & os.O_CREAT):  # type: ignore[call-overload]
                race.swap()
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", racing_open)
    seen: list[bytes] = []

    def on_chunk(rel: str, data: bytes) -> None:
        seen.append(data)
        race.restore()  # the attacker puts the original back before the after-check

    snap = store.take(src, "k", on_chunk=on_chunk, on_restart=race.restore)
    monkeypatch.setattr(os, "open", real_open)
    assert race.swapped
    assert snap.read_bytes() == ORIGINAL
    assert all(b"S" not in chunk for chunk in seen)


def test_directory_swapped_for_a_symlink_mid_walk(tmp_path: Path, store: SnapshotStore) -> None:
    src = tmp_path / "watch" / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "a_big").write_bytes(b"a" * SIZE)
    (src / "sub" / "b.bin").write_bytes(ORIGINAL)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.bin").write_bytes(SECRET)
    st = os.stat(src / "sub" / "b.bin")
    os.utime(outside / "b.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    race = Swap(src / "sub", _symlink_to(outside))

    def on_chunk(rel: str, data: bytes) -> None:
        if rel == "a_big":
            race.swap()

    def on_file(rel: str, path: Path) -> None:
        if rel == "sub/b.bin":
            race.restore()

    snap = store.take(src, "k", on_chunk=on_chunk, on_file=on_file, on_restart=race.restore)
    assert race.swapped and race.restored
    assert _tree(snap) == {"a_big": b"a" * SIZE, "sub/b.bin": ORIGINAL}


def test_hash_checkpoint_never_reads_a_file_swapped_for_a_symlink(tmp_path: Path) -> None:
    src = _race_dir(tmp_path)
    secret = _secret(tmp_path, src / "b.bin")
    race = Swap(src / "b.bin", _symlink_to(secret))

    def progress(n: int) -> None:
        race.swap()  # while a_big is hashed

    with pytest.raises(IntegrityError, match=r"b\.bin"):
        hash_checkpoint(src, progress)
    assert race.swapped


def test_hash_checkpoint_never_reads_a_swapped_single_file(tmp_path: Path) -> None:
    f = tmp_path / "one.pt"
    f.write_bytes(ORIGINAL)
    f.unlink()
    f.symlink_to(_secret(tmp_path, tmp_path / "secret"))
    with pytest.raises(InputError, match=r"one\.pt"):
        hash_checkpoint(f)


# -- #14: durability ----------------------------------------------------------------------


def _record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, str]]:
    """(st_dev, st_ino, path at the time) of every descriptor fsync'ed or fdatasync'ed."""
    synced: list[tuple[int, int, str]] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name, None)
        if real is None:
            continue

        def rec(fd: int, _real: Callable[[int], None] = real) -> None:
            st = os.fstat(fd)
            synced.append((st.st_dev, st.st_ino, os.readlink(f"/proc/self/fd/{fd}")))
            _real(fd)

        monkeypatch.setattr(os, name, rec)
    return synced


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("shape", ["file", "dir"])
def test_take_syncs_every_file_and_directory(
    tmp_path: Path, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    if shape == "file":
        src = tmp_path / "w" / "epoch-1.pt"
        src.parent.mkdir()
        src.write_bytes(b"x" * 1000)
    else:
        src = tmp_path / "w" / "checkpoint-5"
        (src / "sub" / "deep").mkdir(parents=True)
        for rel in ("a.bin", "sub/b.bin", "sub/deep/c.bin", "empty"):
            (src / rel).write_bytes(rel.encode() * (rel != "empty"))
    synced = _record_syncs(monkeypatch)
    snap = store.take(src, "k")
    monkeypatch.undo()
    got = {(dev, ino) for dev, ino, _ in synced}
    want = [snap, *snap.rglob("*"), snap.parent, store.root]
    missing = [str(p) for p in want if (os.lstat(p).st_dev, os.lstat(p).st_ino) not in got]
    assert not missing, f"not synced: {missing}; synced: {[p for *_, p in synced]}"
    assert all(stat.S_ISREG(os.lstat(p).st_mode) or p.is_dir() for p in want)
