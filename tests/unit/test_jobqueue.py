"""The durable job queue and the ledger, on real SQLite files."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.errors import InputError, NotFound, StateError
from cpvd.state.db import StateDB
from cpvd.state.ledger import Ledger
from cpvd.state.queue import BACKOFF_CAP, JobQueue, backoff_delay

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(short_tmp: Path) -> Path:
    return short_tmp / "state" / "queue.db"


@pytest.fixture
def queue(db_path: Path) -> Iterator[JobQueue]:
    q = JobQueue(db_path, rng=random.Random(7))
    yield q
    q.close()


def test_add_get_roundtrip_in_wal_mode(queue: JobQueue, db_path: Path) -> None:
    job = queue.add(
        "vision/resnet50",
        "/data/ckpt/epoch-1.pt",
        snapshot="/state/snap/1",
        kind="file",
        metrics={"loss": 0.5},
        bump="major",
        origin="push",
    )
    assert len(job.id) == 32 and job.state == "queued" and job.attempts == 0
    assert job.step == "snapshotted"  # a job with a snapshot has completed that step
    got = queue.get(job.id)
    assert got == job
    assert got is not None and got.metrics == {"loss": 0.5} and got.bump == "major"
    assert queue.get("0" * 32) is None
    assert os.stat(db_path).st_mode & 0o777 == 0o600
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_rejects_bad_values(queue: JobQueue) -> None:
    with pytest.raises(ValueError, match="kind"):
        queue.add("a", "/x", kind="blob")
    with pytest.raises(ValueError, match="bump"):
        queue.add("a", "/x", bump="patchy")
    assert queue.depth() == 0


def test_fifo_per_artifact_one_in_flight(queue: JobQueue) -> None:
    a1 = queue.add("a", "/a/1")
    a2 = queue.add("a", "/a/2")
    b1 = queue.add("b", "/b/1")
    first = queue.claim_next()
    assert first is not None and first.id == a1.id and first.state == "running"
    second = queue.claim_next()
    assert second is not None and second.id == b1.id  # a2 waits behind the running a1
    assert queue.claim_next() is None
    assert queue.next_due_at() is None  # nothing claimable: the worker waits for a wake-up
    queue.finish(a1.id, "done", {"version": "v1.0.0"})
    third = queue.claim_next()
    assert third is not None and third.id == a2.id


def test_job_waiting_for_retry_blocks_younger_ones(queue: JobQueue) -> None:
    t0 = time.time() + 10
    a1 = queue.add("a", "/a/1")
    a2 = queue.add("a", "/a/2")
    claimed = queue.claim_next(now=t0)
    assert claimed is not None and claimed.id == a1.id
    failed = queue.fail(a1.id, "storage unreachable", retryable=True, now=t0)
    assert failed.state == "queued" and failed.next_attempt_at > t0
    assert failed.error == "storage unreachable"
    assert queue.claim_next(now=t0) is None  # a2 must not overtake a1
    assert queue.next_due_at() == failed.next_attempt_at
    again = queue.claim_next(now=failed.next_attempt_at)
    assert again is not None and again.id == a1.id and again.attempts == 1
    queue.finish(a1.id, "done")
    last = queue.claim_next(now=failed.next_attempt_at)
    assert last is not None and last.id == a2.id


def test_pause_filter(queue: JobQueue) -> None:
    a1 = queue.add("a", "/a/1")
    b1 = queue.add("b", "/b/1")
    claimed = queue.claim_next(paused={"a"})
    assert claimed is not None and claimed.id == b1.id
    assert queue.claim_next(paused={"a"}) is None
    assert queue.next_due_at(paused={"a"}) is None
    with pytest.raises(TypeError):
        queue.claim_next(paused="a")
    assert queue.next_due_at() == pytest.approx(a1.next_attempt_at)
    resumed = queue.claim_next(paused=())
    assert resumed is not None and resumed.id == a1.id


def test_backoff_grows_and_is_capped(db_path: Path) -> None:
    q = JobQueue(db_path, max_attempts=100, rng=random.Random(1))
    try:
        job = q.add("a", "/a/1")
        now = time.time()
        delays = []
        for attempt in range(1, 11):
            claimed = q.claim_next(now=now + 1e6)
            assert claimed is not None and claimed.id == job.id
            job = q.fail(job.id, "timeout", retryable=True, now=now)
            delay = job.next_attempt_at - now
            nominal = min(BACKOFF_CAP, 2.0 ** (attempt - 1))
            assert nominal / 2 <= delay <= nominal
            delays.append(delay)
        assert delays == sorted(delays)
        assert delays[-1] > 100 * delays[0]
    finally:
        q.close()
    for attempt in (10, 20, 60):
        assert BACKOFF_CAP / 2 <= backoff_delay(attempt) <= BACKOFF_CAP


def test_max_attempts_then_failed_and_retry(db_path: Path) -> None:
    q = JobQueue(db_path, max_attempts=3)
    try:
        job = q.add("a", "/a/1")
        q.claim_next()
        q.record_step(job.id, "hashed", md5="ab" * 16, size=10)
        for _ in range(2):
            job = q.fail(job.id, "storage unreachable", retryable=True)
            assert job.state == "queued"
            assert q.claim_next(now=job.next_attempt_at) is not None
        job = q.fail(job.id, "storage unreachable", retryable=True)
        assert job.state == "failed" and job.attempts == 3
        assert job.error == "storage unreachable (gave up after 3 attempts)"
        assert q.next_due_at() is None and q.claim_next(now=time.time() + 1e6) is None

        again = q.retry(job.id)
        assert again.state == "queued" and again.attempts == 0
        assert again.step == "hashed" and again.md5 == "ab" * 16  # resumes, not restarts
        assert q.claim_next() is not None
        with pytest.raises(InputError) as info:
            q.retry(job.id)
        assert info.value.code == "conflict"
    finally:
        q.close()


def test_non_retryable_fails_at_once(queue: JobQueue) -> None:
    job = queue.add("a", "/a/1")
    queue.claim_next()
    failed = queue.fail(job.id, "source vanished", retryable=False)
    assert failed.state == "failed" and failed.attempts == 1
    assert failed.error == "source vanished"
    with pytest.raises(InputError, match="already failed"):
        queue.fail(job.id, "again", retryable=True)
    # the failed job no longer holds up its artifact's line
    b = queue.add("a", "/a/2")
    nxt = queue.claim_next()
    assert nxt is not None and nxt.id == b.id


def test_record_step_finish_and_errors(queue: JobQueue, db_path: Path) -> None:
    job = queue.add("a", "/a/1")
    queue.claim_next()
    queue.record_step(job.id, "hashed", md5="0" * 32, size=123, nfiles=1, kind="file")
    queue.record_step(job.id, "committed", version="v1.2.0", metrics={"acc": 0.9})
    with pytest.raises(ValueError, match="step"):
        queue.record_step(job.id, "teleported")
    with pytest.raises(ValueError, match="cannot set"):
        queue.record_step(job.id, "tagged", state="done")
    with pytest.raises(NotFound) as info:
        queue.record_step("f" * 32, "hashed")
    assert info.value.code == "unknown_job"
    with pytest.raises(ValueError):
        queue.finish(job.id, "running")
    done = queue.finish(job.id, "done", {"tag": "a@v1.2.0"})
    assert done.terminal and done.result == {"tag": "a@v1.2.0"}

    reopened = JobQueue(db_path)
    try:
        got = reopened.get(job.id)
        assert got is not None
        assert (got.state, got.step, got.md5, got.size, got.version, got.kind) == (
            "done", "committed", "0" * 32, 123, "v1.2.0", "file"
        )  # fmt: skip
        assert got.metrics == {"acc": 0.9}
    finally:
        reopened.close()


def test_list_counts_depth_prune(queue: JobQueue) -> None:
    jobs = [queue.add("a" if i % 2 else "b", f"/x/{i}") for i in range(5)]
    claimed = queue.claim_next()
    assert claimed is not None
    queue.finish(claimed.id, "unchanged")
    counts = queue.counts()
    assert counts == {
        "queued": 4, "running": 0, "done": 0, "unchanged": 1, "failed": 0, "skipped": 0,
        "superseded": 0,
    }  # fmt: skip
    assert queue.depth() == 4
    assert [j.id for j in queue.list(oldest_first=True)] == [j.id for j in jobs]
    assert [j.id for j in queue.list()] == [j.id for j in reversed(jobs)]
    assert {j.artifact for j in queue.list(artifact="a")} == {"a"}
    assert [j.id for j in queue.list(states=["unchanged"])] == [claimed.id]
    assert [j.id for j in queue.list(source="/x/3")] == [jobs[3].id]
    assert len(queue.list(limit=2)) == 2
    assert queue.list(states=[]) == []
    assert queue.prune(before=time.time() + 1) == 1
    assert queue.get(claimed.id) is None and queue.depth() == 4


def test_signature_is_kept_and_finds_the_job_on_its_way(db_path: Path) -> None:
    """The source's (size, mtime_ns) outlives the process: after a restart the watcher's
    rescan must recognise a checkpoint whose job is still queued, and the ledger must learn
    the signature when that job ends."""
    q = JobQueue(db_path)
    job = q.add("a", "/w/epoch-1.pt", signature=(1024, 111))
    other = q.add("a", "/w/epoch-2.pt")
    q.close()

    q = JobQueue(db_path)  # a restart
    try:
        assert q.signature(job.id) == (1024, 111)
        assert q.signature(other.id) is None
        found = q.active_with_signature("a", "/w/epoch-1.pt", 1024, 111)
        assert found is not None and found.id == job.id
        assert q.active_with_signature("a", "/w/epoch-1.pt", 1024, 112) is None  # touched
        assert q.active_with_signature("a", "/w/epoch-1.pt", 1025, 111) is None  # grown
        assert q.active_with_signature("b", "/w/epoch-1.pt", 1024, 111) is None
        claimed = q.claim_next()
        assert claimed is not None and claimed.id == job.id
        assert q.active_with_signature("a", "/w/epoch-1.pt", 1024, 111) is not None  # running
        q.finish(job.id, "done")
        assert q.active_with_signature("a", "/w/epoch-1.pt", 1024, 111) is None  # ended
        assert q.signature(job.id) == (1024, 111)  # still there for the ledger
        assert q.prune(before=time.time() + 1) == 1
        assert q.signature(job.id) is None
    finally:
        q.close()


def test_recover_after_kill_9(db_path: Path) -> None:
    """A separate process claims a job, records a step and dies by SIGKILL mid-job."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from cpvd.state.queue import JobQueue
        q = JobQueue(Path({str(db_path)!r}))
        job = q.add("a", "/a/1", kind="file")
        q.add("a", "/a/2")
        q.claim_next()
        q.record_step(job.id, "uploaded", md5="c" * 32, size=7)
        print(job.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    job_id = proc.stdout.strip()
    q = JobQueue(db_path)
    try:
        assert q.counts()["running"] == 1
        recovered = q.recover()
        assert [j.id for j in recovered] == [job_id]
        job = recovered[0]
        assert job.state == "queued" and job.step == "uploaded" and job.md5 == "c" * 32
        assert job.attempts == 0  # a kill is not the job's fault
        again = q.claim_next()
        assert again is not None and again.id == job_id  # before the younger /a/2
    finally:
        q.close()


def test_nested_writes_commit_together_or_not_at_all(db_path: Path) -> None:
    db = StateDB(db_path)
    q, ledger = JobQueue(db), Ledger(db)
    try:
        job = q.add("a", "/a/1")
        q.claim_next()
        with pytest.raises(RuntimeError), db.write():
            q.finish(job.id, "done")
            assert q.get(job.id).state == "done"  # visible inside the transaction
            raise RuntimeError("crash between the two writes")
        assert q.get(job.id).state == "running"  # rolled back with the outer transaction
        with db.write():
            q.finish(job.id, "done")
            ledger.record("a", "/a/1", "e" * 32, 7, 8, "v1.0.0", "versioned")
        other = StateDB(db_path)  # another connection sees both, committed
        try:
            assert JobQueue(other).get(job.id).state == "done"
            assert Ledger(other).seen_stat("a", "/a/1", 7, 8) is not None
        finally:
            other.close()
    finally:
        db.close()


def test_job_end_and_ledger_survive_a_kill_together(db_path: Path) -> None:
    """SIGKILL after the job is marked done but before the ledger row: neither is kept.

    Otherwise the restarted daemon finds a finished job the ledger does not know, and its
    start-up rescan queues the same checkpoint again: a second version of it (the kill loop
    once caught exactly that). Now the job is still running, so it is resumed instead.
    """
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from cpvd.storage.hashing import ContentHash
        from cpvd.state.db import StateDB
        from cpvd.state.queue import JobQueue
        from cpvd.state.ledger import Ledger
        from cpvd.state.outcome import end_job
        db = StateDB(Path({str(db_path)!r}))
        q, ledger = JobQueue(db), Ledger(db)
        job = q.add("a", "/a/1", snapshot="/s/k1/1", signature=(7, 8))
        q.claim_next()
        def killed(*args, **kw):
            os.kill(os.getpid(), signal.SIGKILL)
        ledger.record = killed
        content = ContentHash("e" * 32, 7, 1, False, (), None)
        end_job(q, ledger, q.get(job.id), "done", {{}}, content.md5, "v1.0.0")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    q = JobQueue(db_path)
    try:
        ledger = Ledger(q.db)
        (job,) = q.list()
        assert job.state == "running" and job.step == "snapshotted"
        assert ledger.seen_stat("a", "/a/1", 7, 8) is None
        q.recover()
        # what the start-up rescan asks (why_handled): the checkpoint is on its way
        assert q.active_with_signature("a", "/a/1", 7, 8) is not None
    finally:
        q.close()


def test_second_queue_after_first_dropped_without_close(db_path: Path) -> None:
    first = JobQueue(db_path)
    job = first.add("a", "/a/1")
    first.claim_next()
    first.record_step(job.id, "hashed", md5="d" * 32)
    # `first` is never closed: its committed writes must already be durable and visible
    second = JobQueue(db_path)
    try:
        recovered = second.recover()
        assert [j.id for j in recovered] == [job.id]
        assert recovered[0].step == "hashed"
    finally:
        second.close()
        first.close()


def test_concurrent_add_and_claim_never_claims_twice(queue: JobQueue) -> None:
    n_adders, per_adder, n_claimers = 4, 25, 4
    total = n_adders * per_adder
    lock = threading.Lock()
    claimed: list[str] = []
    claim_order: dict[str, list[str]] = {}
    running_artifacts: set[str] = set()
    errors: list[BaseException] = []
    start = threading.Barrier(n_adders + n_claimers)

    def adder(k: int) -> None:
        try:
            start.wait()
            for i in range(per_adder):
                queue.add(f"art{(k + i) % 5}", f"/src/{k}/{i}")
        except BaseException as exc:
            errors.append(exc)

    def claimer() -> None:
        try:
            start.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if len(claimed) >= total or errors:
                        return
                job = queue.claim_next()
                if job is None:
                    time.sleep(0.001)
                    continue
                with lock:
                    assert job.artifact not in running_artifacts, "two jobs of one artifact ran"
                    running_artifacts.add(job.artifact)
                    claimed.append(job.id)
                    claim_order.setdefault(job.artifact, []).append(job.id)
                time.sleep(0.001)  # "work": another claimer must not take this artifact now
                with lock:
                    # before finish(): until it commits the queue still shows the job running
                    running_artifacts.discard(job.artifact)
                queue.finish(job.id, "done")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(k,)) for k in range(n_adders)]
    threads += [threading.Thread(target=claimer) for _ in range(n_claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    assert len(claimed) == total and len(set(claimed)) == total
    assert queue.counts()["done"] == total
    for artifact, order in claim_order.items():
        added = [j.id for j in queue.list(artifact=artifact, limit=total, oldest_first=True)]
        assert order == added, f"{artifact} claimed out of order"


def test_garbage_db_is_a_state_error_and_rebuild_moves_it(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = b"this is not sqlite at all\n" * 200
    db_path.write_bytes(garbage)
    with pytest.raises(StateError) as info:
        JobQueue(db_path)
    assert str(db_path) in info.value.message and "--rebuild-queue" in info.value.message

    moved = JobQueue.rebuild(db_path)
    assert moved.name.startswith("queue.db.corrupt-") and moved.read_bytes() == garbage
    assert not db_path.exists()
    q = JobQueue(db_path)
    try:
        assert q.depth() == 0 and q.add("a", "/a").state == "queued"
    finally:
        q.close()
    with pytest.raises(StateError):
        JobQueue.rebuild(db_path.with_name("missing.db"))


def test_damaged_header_of_a_used_db(db_path: Path) -> None:
    q = JobQueue(db_path)
    q.add("a", "/a/1")
    q.close()
    with open(db_path, "r+b") as f:
        f.write(b"\xff" * 16)  # the "SQLite format 3" magic
    with pytest.raises(StateError, match="corrupt"):
        JobQueue(db_path)
    second = JobQueue.rebuild(db_path)
    assert second.exists() and not db_path.exists()


def test_newer_schema_is_refused(db_path: Path) -> None:
    JobQueue(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'jobs'")
    conn.close()
    with pytest.raises(StateError, match="newer cpvd"):
        JobQueue(db_path)


def test_closed_queue_raises_state_error(db_path: Path) -> None:
    q = JobQueue(db_path)
    q.close()
    with pytest.raises(StateError, match="closed"):
        q.depth()


# -- ledger ----------------------------------------------------------------------------------


def test_ledger_lookup_and_seen(queue: JobQueue, db_path: Path) -> None:
    ledger = Ledger(queue.db)  # same file, same connection as the queue
    path = "/data/run/epoch-1.pt"
    assert ledger.lookup("a", path) is None
    assert not ledger.seen_content("a", path, "1" * 32)
    ledger.record("a", path, "1" * 32, 10, 111, "v1.0.0", "versioned")
    ledger.record("a", path, "2" * 32, 20, 222, "v1.1.0", "versioned")
    ledger.record("a", path, "1" * 32, 10, 333, "v1.0.0", "reverted")

    latest = ledger.lookup("a", path)
    assert latest is not None and (latest.md5, latest.reason, latest.mtime_ns) == (
        "1" * 32, "reverted", 333
    )  # fmt: skip
    assert ledger.seen_content("a", path, "2" * 32)
    assert not ledger.seen_content("a", path, "3" * 32)
    assert not ledger.seen_content("b", path, "2" * 32)  # other artifact
    assert not ledger.seen_content("a", "/elsewhere.pt", "2" * 32)  # other path

    # only the latest entry's stat counts: the file now has the reverted stat
    assert ledger.seen_stat("a", path, 10, 333) == latest
    assert ledger.seen_stat("a", path, 20, 222) is None
    assert ledger.seen_stat("a", path, 10, 334) is None
    assert [e.reason for e in ledger.entries("a", path)] == ["reverted", "versioned", "versioned"]
    with pytest.raises(ValueError, match="reason"):
        ledger.record("a", path, "1" * 32, 1, 1, None, "guessed")

    # durable, in the same file as the queue
    other = Ledger(db_path)
    try:
        assert other.lookup("a", path) == latest
    finally:
        other.close()


def test_ledger_and_queue_share_one_state_db(db_path: Path) -> None:
    db = StateDB(db_path)
    try:
        q = JobQueue(db)
        ledger = Ledger(db)
        q.add("a", "/a/1")
        ledger.record("a", "/a/1", "e" * 32, 1, 1, None, "unchanged")
        q.close()  # does not close a StateDB it does not own
        ledger.close()
        assert not db.closed
        assert ledger.seen_content("a", "/a/1", "e" * 32) and q.depth() == 1
    finally:
        db.close()
