"""A copy waiting for space in a full snapshot store gives up when the store is closed at
shutdown (cpvd.pipeline.snapshot.SnapshotStore.close): it waited with no deadline, so the
daemon's exit waited on its thread and a SIGTERM went unanswered."""

from __future__ import annotations

import threading
from pathlib import Path

from cpvd.pipeline.snapshot import SnapshotSpaceTimeout, SnapshotStore


def test_a_copy_waiting_for_space_gives_up_when_the_store_closes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots", limit_bytes=1000)
    store.hold_partial("another-copy", 900)
    src = tmp_path / "last.ckpt"
    src.write_bytes(b"x" * 600)
    failed: list[BaseException] = []

    def take() -> None:
        try:
            store.take(src, "k1")
        except BaseException as exc:
            failed.append(exc)

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "the copy should wait for space"
    store.close()
    t.join(30)
    assert not t.is_alive(), "the copy still waits after close"
    assert len(failed) == 1 and isinstance(failed[0], SnapshotSpaceTimeout), failed
    assert "stopping" in str(failed[0])
    assert store.path("k1") is None
