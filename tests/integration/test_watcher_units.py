"""The Watcher with the ``auto`` layout against real inotify: units at any depth are found
from events alone (the rescan is far away), logs beside them never are."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.config.model import WatchConfig
from cpvd.watch.watcher import Watcher
from tests.integration.test_watcher import Collector, zip_bytes

SETTLE = 0.5


@pytest.fixture
def watched(short_tmp: Path) -> Iterator[tuple[Path, Collector, Watcher]]:
    root = short_tmp / "runs"
    root.mkdir()
    col = Collector()
    cfg = WatchConfig(path=root, artifact="team/model", settle_seconds=SETTLE)  # auto: a model
    w = Watcher([cfg], rescan_seconds=300.0)  # no rescan within the test: events only
    w.start(col.on_ready, col.on_waiting)
    yield root, col, w
    w.stop()


def test_a_run_directory_renamed_in_gives_its_checkpoints_only(
    short_tmp: Path, watched: tuple[Path, Collector, Watcher]
) -> None:
    root, col, _ = watched
    staging = short_tmp / "staging" / "version_3"
    (staging / "checkpoints").mkdir(parents=True)
    (staging / "checkpoints" / "epoch=0-step=9.ckpt").write_bytes(zip_bytes(short_tmp, 5000))
    (staging / "checkpoints" / "epoch=1-step=19.ckpt").write_bytes(zip_bytes(short_tmp, 6000))
    (staging / "hparams.yaml").write_text("lr: 0.1\n")
    (staging / "events.out.tfevents.1.host.0").write_bytes(b"ev")
    (root / "lightning_logs").mkdir()
    os.rename(staging, root / "lightning_logs" / "version_3")
    col.wait_for(lambda: len(col.ready) >= 2)
    with open(root / "lightning_logs" / "version_3" / "events.out.tfevents.1.host.0", "ab") as f:
        f.write(b"more")  # a log written after: no version
    (root / "train.log").write_text("step 1\n")
    time.sleep(4 * SETTLE)
    ck = root / "lightning_logs" / "version_3" / "checkpoints"
    assert sorted(col.paths()) == [ck / "epoch=0-step=9.ckpt", ck / "epoch=1-step=19.ckpt"]
    assert col.waiting == []


def test_a_checkpoint_directory_is_one_unit_however_deep(
    short_tmp: Path, watched: tuple[Path, Collector, Watcher]
) -> None:
    root, col, _ = watched
    ck = root / "exp1" / "out" / "checkpoint-40"
    ck.mkdir(parents=True)
    (ck / "optimizer.pt").write_bytes(zip_bytes(short_tmp, 3000))
    (ck / "trainer_state.json").write_text('{"global_step": 40}')
    (ck / "rng_state_0.pth").write_bytes(zip_bytes(short_tmp, 1000))
    col.wait_for(lambda: len(col.ready) >= 1)
    time.sleep(4 * SETTLE)
    assert col.paths() == [ck]
    assert col.ready[0][1].files == 3
