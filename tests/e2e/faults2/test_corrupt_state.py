"""Case 9: corrupt state. The daemon refuses a corrupt queue database or config with a
message that says what to do; ``cpvd run --rebuild-queue`` recovers (the old file moved
aside, the queue rebuilt from a rescan) and no version already in Git is lost or repeated.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.faults2.helpers import idle, version_tags
from tests.e2e.harness import DaemonProcess, Watch, git, wait_for

ARTIFACT = "team/corrupt"


def exit_code(d: DaemonProcess, extra_args: tuple[str, ...] = ()) -> int:
    """Start the daemon expecting it to refuse; return its exit status."""
    d.start(wait=False, extra_args=extra_args)
    assert d.proc is not None
    try:
        rc = d.proc.wait(60)
    except subprocess.TimeoutExpired:
        d.kill()
        raise AssertionError(f"cpvd did not refuse:\n{d.log()}") from None
    d.proc = None
    return rc


def versions(d: DaemonProcess) -> list[str]:
    return [v["version"] for v in d.client().versions(ARTIFACT)]


def test_corrupt_queue_db_refused_then_rebuilt_without_losing_versions(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], remote=bare_remote)
    with d:
        for i in range(1, 4):
            (ck / f"epoch-{i}.bin").write_bytes(os.urandom(20_000))
            wait_for(lambda i=i: len(versions(d)) == i, what=f"version {i}")
        wait_for(lambda: idle(d), what="idle")
        wait_for(lambda: d.client().status()["registry"]["unpushed"] == 0, what="pushed")
        # a checkpoint snapshotted and queued but not versioned yet (its artifact paused),
        # whose original the trainer then rotated away: the snapshot is the only copy
        d.client().pause(ARTIFACT)
        pending = os.urandom(20_000)
        (ck / "epoch-9.bin").write_bytes(pending)
        wait_for(lambda: d.client().status()["queue"]["queued"] == 1, what="epoch-9 queued")
        (ck / "epoch-9.bin").unlink()
    before_tags = version_tags(d.registry, ARTIFACT)
    before_head = git(d.registry, "rev-parse", "HEAD").strip()
    assert len(before_tags) == 3

    db = d.state_dir / "queue.db"
    garbage = b"\x00garbage, not SQLite\xff" * 400
    db.write_bytes(garbage)
    for side in ("queue.db-wal", "queue.db-shm"):
        (d.state_dir / side).unlink(missing_ok=True)

    rc = exit_code(d)
    log = d.log()
    assert rc == 1, log
    assert str(db) in log and "corrupt" in log and "cpvd run --rebuild-queue" in log, log
    assert db.read_bytes() == garbage  # refusing touched nothing

    d.start(extra_args=("--rebuild-queue",))
    try:
        moved = sorted(d.state_dir.glob("queue.db.corrupt-*"))
        assert [p.read_bytes() for p in moved if not p.name.endswith(("-wal", "-shm"))] == [garbage]
        assert "moved the old queue database aside" in d.log()
        # the rebuilt queue owns no snapshot; the one still waiting is moved aside, intact
        kept = list((d.state_dir / "orphans").glob("*/*/epoch-9.bin"))
        assert [p.read_bytes() for p in kept] == [pending], d.log()
        assert "moved to" in d.log() and "not deleted" in d.log()
        assert not list((d.state_dir / "snapshots").glob("*/epoch-9.bin"))
        # the start-up rescan re-queues every checkpoint on disk: none may become a version
        # again (their content and path are versions in the registry already)
        time.sleep(2.5)  # > settle + one rescan period
        wait_for(lambda: idle(d), what="idle after the rescan")
        assert version_tags(d.registry, ARTIFACT) == before_tags
        assert versions(d) == ["v1.2.0", "v1.1.0", "v1.0.0"]
        # new work goes on, numbered after the kept versions
        (ck / "epoch-4.bin").write_bytes(os.urandom(20_000))
        wait_for(lambda: versions(d)[0] == "v1.3.0", what="v1.3.0")
        wait_for(lambda: idle(d), what="idle")
        assert len(versions(d)) == 4
    finally:
        d.stop()
    # nothing in Git was lost: the old head is an ancestor, every old tag still there
    git(d.registry, "merge-base", "--is-ancestor", before_head, "HEAD")
    assert set(before_tags) <= set(version_tags(d.registry, ARTIFACT))
    git(d.registry, "fsck", "--no-progress")
    # a normal start afterwards works on the rebuilt database
    with d:
        assert len(versions(d)) == 4


def test_corrupt_config_refused_with_the_file_and_key_named(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(watches=[Watch(short_tmp / "ck", ARTIFACT)])
    d.root.mkdir(parents=True)
    d.write_config()
    good = d.config_path.read_text()

    # garbage bytes over the config file
    d.write_config = lambda: d.config_path.write_bytes(b"\x00\xff[daemon\nstate_dir = ")  # type: ignore[method-assign]
    assert exit_code(d) == 2
    log = d.log()
    assert str(d.config_path) in log, log
    assert "Traceback" not in log, log

    # a valid TOML file with a wrong key: the key and the file are named
    d.write_config = lambda: d.config_path.write_text(  # type: ignore[method-assign]
        good.replace("rescan_seconds = 2", "rescan_secs = 2")
    )
    d.log_path.unlink()
    assert exit_code(d) == 2
    log = d.log()
    assert str(d.config_path) in log and "rescan_secs" in log, log
    assert not (d.state_dir / "queue.db").exists()  # refused before touching any state
