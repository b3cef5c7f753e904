"""Each registry's worker sees only its artifacts' jobs of the one durable queue."""

from __future__ import annotations

from pathlib import Path

from cpvd.state.db import StateDB
from cpvd.state.queue import JobQueue
from cpvd.state.scoped_queue import ScopedQueue


def test_scoped_queues_claim_wait_for_and_recover_only_their_own_jobs(short_tmp: Path) -> None:
    db = StateDB(short_tmp / "queue.db")
    try:
        whole = JobQueue(db)
        scope_a: set[str] = {"a/model"}
        qa = ScopedQueue(db, lambda: scope_a, 300.0)
        qb = ScopedQueue(db, lambda: {"b/model"}, 300.0)
        ja = whole.add("a/model", "/w/a/1.pt")
        jb = whole.add("b/model", "/w/b/1.pt")
        whole.add("b/model", "/w/b/2.pt")
        assert [j.id for j in qa.list(states=("queued",))] == [ja.id]
        assert qa.next_due_at() is not None
        claimed_b = qb.claim_next()
        assert claimed_b is not None and claimed_b.id == jb.id
        claimed_a = qa.claim_next()
        assert claimed_a is not None and claimed_a.id == ja.id
        assert qa.claim_next() is None and qa.next_due_at() is None
        # a's worker recovering after its own failure leaves b's running job alone
        assert [j.id for j in qa.recover()] == [ja.id]
        b_now = whole.get(jb.id)
        assert b_now is not None and b_now.state == "running"
        # the scope is read on every claim (a SIGHUP may move a watch)
        scope_a.clear()
        assert qa.claim_next() is None
        unscoped = ScopedQueue(db, None, 300.0)
        got = unscoped.claim_next()
        assert got is not None and got.id == ja.id
    finally:
        db.close()


def test_a_scoped_depth_counts_only_its_registrys_jobs(short_tmp: Path) -> None:
    db = StateDB(short_tmp / "queue.db")
    try:
        whole = JobQueue(db)
        whole.add("a/model", "/w/a/1.pt")
        whole.add("b/model", "/w/b/1.pt")
        whole.add("b/model", "/w/b/2.pt")
        assert ScopedQueue(db, lambda: {"a/model"}, 300.0).depth() == 1
        assert ScopedQueue(db, lambda: {"b/model"}, 300.0).depth() == 2
        assert ScopedQueue(db, None, 300.0).depth() == whole.depth() == 3
    finally:
        db.close()
