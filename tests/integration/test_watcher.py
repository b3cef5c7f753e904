"""The Watcher against real watchdog (inotify and polling) on real files."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers import Observer

from cpvd.config.model import WatchConfig
from cpvd.watch.settle import Signature
from cpvd.watch.watcher import Watcher

SETTLE = 0.5


class Collector:
    """Records callbacks (and the thread they ran on) and lets a test wait for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ready: list[tuple[Path, Signature, float]] = []
        self.waiting: list[tuple[Path, str]] = []
        self.threads: set[str] = set()

    def on_ready(self, cfg: WatchConfig, path: Path, sig: Signature) -> None:
        with self.cond:
            self.ready.append((path, sig, time.monotonic()))
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def on_waiting(self, cfg: WatchConfig, path: Path, reason: str) -> None:
        with self.cond:
            self.waiting.append((path, reason))
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, timeout), (self.ready, self.waiting)

    def paths(self) -> list[Path]:
        with self.cond:
            return [p for p, _, _ in self.ready]


@pytest.fixture
def root(short_tmp: Path) -> Path:
    d = short_tmp / "ckpts"
    d.mkdir()
    return d


@pytest.fixture
def col() -> Collector:
    return Collector()


def start_watcher(col: Collector, *cfgs: WatchConfig, rescan: float = 30.0) -> Watcher:
    w = Watcher(list(cfgs), rescan_seconds=rescan, poll_interval=0.2)
    w.start(col.on_ready, col.on_waiting)
    return w


@pytest.fixture
def watcher_factory(col: Collector) -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(*cfgs: WatchConfig, rescan: float = 30.0) -> Watcher:
        w = start_watcher(col, *cfgs, rescan=rescan)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def cfg(root: Path, poll: bool = False, settle: float = SETTLE) -> WatchConfig:
    # one unit per top-level entry: these tests are about events, rescans and settling;
    # what counts as a unit: tests/unit/test_units.py, tests/e2e/test_checkpoint_units.py
    return WatchConfig(
        path=root, artifact="team/model", settle_seconds=settle, poll=poll, layout="entries"
    )


def zip_bytes(tmp: Path, size: int = 200_000) -> bytes:
    p = tmp / "build.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", os.urandom(size))
        zf.writestr("archive/version", b"3")
    data = p.read_bytes()
    p.unlink()
    return data


def settle_a_while(seconds: float = 2 * SETTLE) -> None:
    time.sleep(seconds)


def test_slow_writer_is_emitted_once_with_final_size(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    watcher_factory(cfg(root))
    f = root / "epoch-1.bin"
    with open(f, "wb") as fh:
        for _ in range(10):
            fh.write(b"x" * 1000)
            fh.flush()
            time.sleep(0.2)  # 2 s of writing, pauses shorter than the quiet period
    done = time.monotonic()
    col.wait_for(lambda: len(col.ready) >= 1)
    settle_a_while()
    assert [(p, s.size) for p, s, _ in col.ready] == [(f, 10_000)]
    assert col.ready[0][2] >= done + SETTLE * 0.9
    assert col.threads == {"cpvd-watcher"}


def test_zip_written_in_place_waits_while_torn(
    short_tmp: Path, root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    w = watcher_factory(cfg(root))
    data = zip_bytes(short_tmp)
    f = root / "epoch-2.pt"
    with open(f, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        col.wait_for(lambda: len(col.waiting) >= 1)  # a pause longer than the quiet period
        assert col.waiting[0][0] == f and "zip" in col.waiting[0][1]
        assert [p for _, p, _ in w.waiting()] == [f]
        assert col.ready == []
        fh.write(data[len(data) // 2 :])
    col.wait_for(lambda: len(col.ready) >= 1)
    settle_a_while()
    assert [(p, s.size) for p, s, _ in col.ready] == [(f, len(data))]
    assert w.waiting() == []


def test_hf_checkpoint_dir_is_one_version(
    short_tmp: Path, root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    watcher_factory(cfg(root))
    d = root / "checkpoint-500"
    d.mkdir()
    for name in ("model.safetensors.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (d / name).write_bytes(zip_bytes(short_tmp, 20_000))
        time.sleep(0.15)
    settle_a_while()  # no trainer_state.json yet: waiting, not ready
    assert col.ready == []
    assert col.waiting and col.waiting[-1][0] == d
    (d / "trainer_state.json").write_text('{"global_step": 500}')
    col.wait_for(lambda: len(col.ready) >= 1)
    settle_a_while()
    assert [(p, s.files) for p, s, _ in col.ready] == [(d, 5)]


def test_dcp_dir_after_metadata_rename(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    watcher_factory(cfg(root))
    d = root / "step-100"
    d.mkdir()
    for rank in range(3):
        (d / f"__{rank}_0.distcp").write_bytes(os.urandom(5000))
    (d / ".metadata.tmp").write_bytes(b"meta")
    settle_a_while()
    assert col.ready == []
    renamed = time.monotonic()
    os.rename(d / ".metadata.tmp", d / ".metadata")
    col.wait_for(lambda: len(col.ready) >= 1)
    settle_a_while()
    assert [(p, s.files) for p, s, _ in col.ready] == [(d, 4)]
    assert col.ready[0][2] > renamed


def test_rename_in_from_outside_is_emitted(
    short_tmp: Path, root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    watcher_factory(cfg(root))
    outside = short_tmp / "staging"
    outside.mkdir()
    (outside / "epoch-9.pt").write_bytes(zip_bytes(short_tmp))
    (outside / "run-7").mkdir()
    (outside / "run-7" / "w.npy").write_bytes(b"w" * 100)
    os.rename(outside / "epoch-9.pt", root / "epoch-9.pt")
    os.rename(outside / "run-7", root / "run-7")
    col.wait_for(lambda: len(col.ready) >= 2)
    settle_a_while()
    assert sorted(col.paths()) == [root / "epoch-9.pt", root / "run-7"]


def test_temp_names_never_emitted(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    w = watcher_factory(cfg(root))
    for name in ("epoch-1.pt.tmp", "model.part", ".hidden", "latest", "e.pt.metrics.json"):
        (root / name).write_bytes(b"data")
    (root / "tmp-checkpoint-9").mkdir()
    (root / "tmp-checkpoint-9" / "model.bin").write_bytes(b"m")
    (root / "real.bin").write_bytes(b"r")  # a control: this one must show up
    col.wait_for(lambda: len(col.ready) >= 1)
    settle_a_while()
    w.rescan()
    settle_a_while()
    assert col.paths() == [root / "real.bin"]
    assert w.waiting() == []


def test_files_present_before_start_are_emitted_once(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    (root / "old-1.bin").write_bytes(b"1")
    (root / "old-dir").mkdir()
    (root / "old-dir" / "a").write_bytes(b"2")
    w = watcher_factory(cfg(root))
    col.wait_for(lambda: len(col.ready) >= 2)
    w.rescan()  # within one process: never the same (path, signature) twice
    settle_a_while()
    assert sorted(col.paths()) == [root / "old-1.bin", root / "old-dir"]


def test_polling_mode(root: Path, col: Collector, watcher_factory: Callable[..., Watcher]) -> None:
    watcher_factory(cfg(root, poll=True))
    f = root / "nfs.bin"
    with open(f, "wb") as fh:
        for _ in range(4):
            fh.write(b"p" * 100)
            fh.flush()
            time.sleep(0.1)
    col.wait_for(lambda: len(col.ready) >= 1)
    settle_a_while()
    assert [(p, s.size) for p, s, _ in col.ready] == [(f, 400)]


def test_missing_root_is_retried_at_rescan(
    short_tmp: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    root = short_tmp / "later"
    w = watcher_factory(cfg(root))
    assert not root.exists()  # the watcher creates nothing
    root.mkdir()
    w.rescan()
    (root / "a.bin").write_bytes(b"a")
    col.wait_for(lambda: len(col.ready) >= 1)
    assert col.paths() == [root / "a.bin"]


def test_inotify_watch_limit_falls_back_to_polling(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", refuse)
    watcher_factory(cfg(root))
    assert "polling it instead" in caplog.text
    (root / "a.bin").write_bytes(b"a")
    col.wait_for(lambda: len(col.ready) >= 1)
    assert col.paths() == [root / "a.bin"]


def test_update_watches_keeps_state_of_kept_roots(
    short_tmp: Path, root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    (root / "a.bin").write_bytes(b"a")
    w = watcher_factory(cfg(root))
    col.wait_for(lambda: len(col.ready) >= 1)
    other = short_tmp / "other"
    other.mkdir()
    (other / "b.bin").write_bytes(b"b")
    w.update_watches([cfg(root), cfg(other)])
    col.wait_for(lambda: len(col.ready) >= 2)
    settle_a_while()
    assert sorted(col.paths()) == [root / "a.bin", other / "b.bin"]  # a.bin not again
    w.update_watches([cfg(other)])
    (root / "c.bin").write_bytes(b"c")  # no longer watched
    (other / "d.bin").write_bytes(b"d")
    col.wait_for(lambda: len(col.ready) >= 3)
    settle_a_while()
    assert col.paths()[2:] == [other / "d.bin"]
    assert [c.path for c in w.watches()] == [other]


def test_stop_joins_every_thread(root: Path, col: Collector) -> None:
    before = set(threading.enumerate())
    w = start_watcher(col, cfg(root), cfg(root.parent / "polled", poll=True))
    (root.parent / "polled").mkdir()
    w.rescan()
    assert len(set(threading.enumerate()) - before) >= 3
    w.stop()
    assert set(threading.enumerate()) - before == set()
    assert not w.running


def test_periodic_rescan_finds_what_events_missed(
    short_tmp: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    root = short_tmp / "appears-later"
    watcher_factory(cfg(root), rescan=0.5)
    root.mkdir()
    (root / "a.bin").write_bytes(b"a")  # no watch on it yet: only a rescan can see it
    col.wait_for(lambda: len(col.ready) >= 1)
    assert col.paths() == [root / "a.bin"]


def test_idle_watcher_sleeps(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks: list[int] = []
    orig = Watcher._tick

    def counting(self: Watcher, batch: list[tuple[Path, str, bool]], forced: bool) -> None:
        ticks.append(len(batch))
        orig(self, batch, forced)

    monkeypatch.setattr(Watcher, "_tick", counting)
    watcher_factory(cfg(root))
    (root / "a.bin").write_bytes(b"a")
    col.wait_for(lambda: len(col.ready) >= 1)
    busy = len(ticks)
    time.sleep(1.0)
    assert len(ticks) == busy  # nothing pending: no wake-ups until the next rescan


def test_root_deleted_and_recreated_is_watched_again(
    root: Path, col: Collector, watcher_factory: Callable[..., Watcher]
) -> None:
    w = watcher_factory(cfg(root))
    (root / "a.bin").write_bytes(b"a")
    col.wait_for(lambda: len(col.ready) >= 1)
    shutil.rmtree(root)  # a user wipes the run directory and starts training again
    time.sleep(0.3)
    root.mkdir()  # ext4 may hand back the very same inode number
    w.rescan()
    (root / "b.bin").write_bytes(b"b")  # only events can report this before the next rescan
    col.wait_for(lambda: len(col.ready) >= 2)
    assert col.paths() == [root / "a.bin", root / "b.bin"]
