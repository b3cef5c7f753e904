"""Paths whose names are not valid UTF-8 (surrogate escapes from ``os.fsdecode``) go through
the state database losslessly, and stay distinct from every other name (issue 15 #7)."""

from __future__ import annotations

import os
from pathlib import Path

from cpvd.state.db import StateDB
from cpvd.state.ledger import Ledger
from cpvd.state.queue import JobQueue

RAW = os.fsdecode(b"/w/bad\xff\xfe.bin")
LOOKALIKE = "/w/bad\ufffd\ufffd.bin"  # what a lossy decode would have made of it


def test_ledger_and_queue_keep_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "q.db")
    try:
        queue, ledger = JobQueue(db), Ledger(db)
        job = queue.add("a", RAW, snapshot=f"/s/k/{os.path.basename(RAW)}", signature=(3, 4))
        assert queue.get(job.id) is not None and queue.get(job.id).source == RAW  # type: ignore[union-attr]
        assert queue.active_with_signature("a", RAW, 3, 4) is not None
        assert queue.active_with_signature("a", LOOKALIKE, 3, 4) is None
        queue.claim_next()
        queue.fail(job.id, f"cannot read {RAW}", retryable=False)
        assert queue.get(job.id).error == f"cannot read {RAW}"  # type: ignore[union-attr]
        ledger.record("a", RAW, "0" * 32, 3, 4, "v1.0.0", "versioned")
        seen = ledger.seen_stat("a", RAW, 3, 4)
        assert seen is not None and seen.path == RAW
        assert ledger.seen_stat("a", LOOKALIKE, 3, 4) is None
        assert ledger.seen_content("a", RAW, "0" * 32)
    finally:
        db.close()
