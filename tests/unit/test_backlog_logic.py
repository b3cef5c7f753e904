"""The durability lag and recovery point, and which waiting jobs coalescing may skip, on
a real queue database and a fake clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.config.lifecycle import BestConfig
from cpvd.config.model import WatchConfig
from cpvd.pipeline.coalesce import protection, to_supersede
from cpvd.pipeline.durability import Durability
from cpvd.state.backlog import supersede
from cpvd.state.queue import Job, JobQueue


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue(short_tmp: Path) -> Iterator[JobQueue]:
    q = JobQueue(short_tmp / "queue.db")
    yield q
    q.close()


def _at(queue: JobQueue, job: Job, created: float) -> None:
    with queue.db.write() as conn:
        conn.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (created, job.id))


def test_lag_is_the_age_of_the_oldest_checkpoint_on_its_way(queue: JobQueue) -> None:
    clock = Clock()
    dur = Durability(queue, has_remote=lambda: True, clock=clock)
    assert dur.lag(0) == 0.0
    a, b = queue.add("x/a", "/w/1"), queue.add("x/b", "/w/2")
    _at(queue, a, 900.0)
    _at(queue, b, 950.0)
    assert dur.lag(0) == 100.0
    claimed = queue.claim_next()
    assert claimed is not None and claimed.id == a.id  # running still counts
    assert dur.lag(0) == 100.0
    queue.finish(a.id, "done")
    dur.on_event("versioned", {"job_id": a.id})  # a version, not yet pushed: still counts
    assert dur.lag(1) == 100.0
    assert dur.recovery_points() == {}
    dur.on_event("pushed", {"commits": 1})
    assert dur.lag(0) == 50.0  # b is the oldest now
    assert dur.recovery_points() == {"x/a": 900.0}
    queue.finish(b.id, "superseded")  # ended: no longer on its way
    assert dur.lag(0) == 0.0


def test_without_a_remote_a_version_is_durable_when_made(queue: JobQueue) -> None:
    clock = Clock()
    dur = Durability(queue, has_remote=lambda: False, clock=clock)
    a = queue.add("x/a", "/w/1")
    _at(queue, a, 990.0)
    queue.finish(a.id, "done")
    dur.on_event("versioned", {"job_id": a.id})
    assert dur.lag(0) == 0.0
    assert dur.recovery_points() == {"x/a": 990.0}


def test_a_push_without_new_commits_still_clears_the_versions_waiting(queue: JobQueue) -> None:
    dur = Durability(queue, has_remote=lambda: True, clock=Clock())
    a = queue.add("x/a", "/w/1")
    _at(queue, a, 980.0)
    queue.finish(a.id, "done")
    dur.on_event("versioned", {"job_id": a.id})
    assert dur.lag(1) == 20.0
    assert dur.lag(0) == 0.0  # the registry says nothing is unpushed
    dur.seed({"x/a": 100.0, "x/c": 50.0})  # older seeds never move a point back
    assert dur.recovery_points() == {"x/a": 980.0, "x/c": 50.0}
    report = dur.report(0)
    assert report["recovery_points"]["x/a"] == {"at": 980.0, "age_seconds": 20.0}


def _watch(**kw: object) -> WatchConfig:
    return dataclasses.replace(WatchConfig(path=Path("/w"), artifact="x/a"), **kw)  # type: ignore[arg-type]


def test_protection_rules(queue: JobQueue) -> None:
    plain = queue.add("x/a", "/w/1")
    pushed = queue.add("x/a", "/w/2", origin="push")
    good = queue.add("x/a", "/w/3", metrics={"loss": 0.1})
    bad = queue.add("x/a", "/w/4", metrics={"loss": 0.9})
    uploaded = queue.record_step(queue.add("x/a", "/w/5").id, "uploaded")
    w = _watch(coalesce=True)
    best = _watch(coalesce=True, best=BestConfig("loss", "min"))
    assert protection(plain, w, None) is None
    assert protection(pushed, w, None) == "explicitly pushed"
    assert protection(uploaded, w, None) == "already uploaded"
    assert protection(good, w, None) is None  # no best rule: metrics do not matter
    assert "would hold the stage best" in (protection(good, best, 0.5) or "")
    assert protection(bad, best, 0.5) is None
    assert protection(plain, best, 0.5) is None  # no metric: it cannot become best
    assert protection(bad, best, None) is not None  # no best yet: any metric would take it


def test_only_older_unprotected_idle_jobs_are_superseded(queue: JobQueue) -> None:
    jobs = [queue.add("x/a", f"/w/{i}", origin="push" if i == 1 else "watch") for i in range(5)]
    busy = {jobs[2].id}
    picked = to_supersede(jobs, _watch(coalesce=True), None, busy.__contains__)
    assert [(j.source, n.source) for j, n in picked] == [("/w/0", "/w/4"), ("/w/3", "/w/4")]
    assert to_supersede(jobs, _watch(coalesce=False), None, busy.__contains__) == []
    assert to_supersede(jobs[:1], _watch(coalesce=True), None, busy.__contains__) == []


def test_supersede_only_ends_a_job_still_waiting(queue: JobQueue) -> None:
    a, b = queue.add("x/a", "/w/1"), queue.add("x/a", "/w/2")
    claimed = queue.claim_next()
    assert claimed is not None and claimed.id == a.id
    assert supersede(queue, a.id, b.id, "newer") is None  # running: never touched
    c = queue.add("x/a", "/w/3")
    ended = supersede(queue, b.id, c.id, "newer")
    assert ended is not None and ended.state == "superseded" and ended.terminal
    assert ended.result == {"reason": "newer", "superseded_by": c.id}
    assert supersede(queue, b.id, c.id, "again") is None
    assert queue.counts()["superseded"] == 1


def test_an_early_upload_cancelled_before_it_ran_leaves_no_link(short_tmp: Path) -> None:
    """Coalescing cancels the early uploads of superseded jobs; one still waiting for the
    pool must not keep its hard link (and so the released snapshot's bytes) on disk."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from cpvd.pipeline.file_upload import FileUploads

    gate = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(gate.wait, 30)  # the one thread is busy
        uploads = FileUploads(lambda: None, short_tmp, pool)  # type: ignore[arg-type,return-value]
        src = short_tmp / "snap.bin"
        src.write_bytes(b"x" * 100)
        batch = uploads.batch()
        link = uploads._pin(src)
        assert link is not None and link.exists()
        uploads._submit(batch, "0" * 32, link, 100)
        assert batch.cancel() == []  # never started: nothing to wait for
        assert not link.exists()
    finally:
        gate.set()
        pool.shutdown(wait=True)
