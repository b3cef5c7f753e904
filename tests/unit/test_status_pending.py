"""``cpvctl status``: a settling checkpoint shows its quiet time left, a waiting one since when."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from cpvctl.render import render_status
from cpvd.watch.pending import Pending, status_rows, wall_iso
from cpvd.watch.settle import Tracker


def test_tracker_reports_settling_then_waiting(tmp_path: Path) -> None:
    t = Tracker(tmp_path, settle_seconds=2.0)
    f = tmp_path / "epoch-1.safetensors"
    f.write_bytes(b"hello\n")  # not a valid safetensors file
    t.observe(f, 10.0, closed=True)
    assert t.pending(10.5) == [Pending(f, None, 10.0, 1.5)]
    out = t.due(12.0)
    assert [d.status for d in out] == ["waiting"]
    [p] = t.pending(13.0)
    assert p.reason is not None and "safetensors" in p.reason
    assert p.since == 12.0 and p.quiet_left == 0.0
    t.due(20.0)  # still invalid: it keeps its first time
    assert t.pending(21.0)[0].since == 12.0


def test_status_rows_and_rendering() -> None:
    watch = SimpleNamespace(artifact="demo/model")
    now = time.monotonic()
    rows = status_rows(
        [
            (watch, Pending(Path("/w/a.pt"), None, now, 1.42)),
            (watch, Pending(Path("/w/b.safetensors"), "header too short", now - 60, 0.0)),
        ]
    )
    waiting, settling = rows
    assert settling == [{"artifact": "demo/model", "path": "/w/a.pt", "quiet_left": 1.4}]
    since = datetime.fromisoformat(waiting[0]["since"]).timestamp()
    assert abs(since - (time.time() - 60)) < 5
    text = render_status({"waiting": waiting, "settling": settling})
    assert "SETTLING" in text and "1.4s" in text
    line = next(x for x in text.splitlines() if x.startswith("/w/b.safetensors"))
    assert datetime.fromisoformat(waiting[0]["since"]).astimezone().strftime("%H:%M") in line
    assert wall_iso(now).endswith("+00:00")


def test_a_waiting_file_that_changes_settles_again(tmp_path: Path) -> None:
    t = Tracker(tmp_path, settle_seconds=2.0)
    f = tmp_path / "epoch-1.safetensors"
    f.write_bytes(b"hello\n")
    t.observe(f, 0.0, closed=True)
    t.due(2.0)
    assert t.pending(3.0)[0].reason is not None
    f.write_bytes(b"hello again\n")
    t.observe(f, 4.0, closed=True)
    assert t.pending(4.5) == [Pending(f, None, 4.0, 1.5)]
