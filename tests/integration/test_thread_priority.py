"""``[daemon] nice``: the threads that hash, copy, upload and run Git yield to the trainer
(issue 18), read back from the kernel (``/proc/self/task/TID/stat``), not from our own
bookkeeping; the event loop's thread keeps its priority."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cpvd.pipeline.priority import IOPRIO_CLASS_BE, io_priority, lower_thread_priority
from cpvd.pipeline.threads import Executors

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def nice_of(tid: int) -> int:
    """Field 19 of ``/proc/self/task/TID/stat`` (after the parenthesised name)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2 :].split()[16])


def here() -> int:
    return threading.get_native_id()


def test_every_pool_thread_runs_at_the_configured_nice() -> None:
    base = nice_of(here())
    assert base < 10, "run the tests at a normal priority"
    ex = Executors.lowered(10)
    try:
        pools = (ex.registry, ex.io, ex.snapshot, ex.file_upload)
        tids = [pool.submit(here).result() for pool in pools]
        assert [nice_of(t) for t in tids] == [10] * 4
        assert nice_of(here()) == base, "the caller (the event loop) keeps its priority"
    finally:
        ex.shutdown()


def test_threads_a_lowered_thread_starts_inherit_it() -> None:
    """boto3's transfer threads and the snapshot's hashing thread are started from the
    pools' threads: they must be lowered too, without knowing about it."""

    def child_nice() -> int:
        with ThreadPoolExecutor(1) as inner:  # as s3transfer does
            return nice_of(inner.submit(here).result())

    ex = Executors.lowered(12)
    try:
        assert ex.io.submit(child_nice).result() == 12
    finally:
        ex.shutdown()


def test_io_priority_is_best_effort_lowest() -> None:
    ex = Executors.lowered(10)
    try:
        tid = ex.io.submit(here).result()
        got = ex.io.submit(io_priority, tid).result()
    finally:
        ex.shutdown()
    if got is None:
        pytest.skip("no ioprio_get on this architecture")
    assert got == (IOPRIO_CLASS_BE, 7)


def test_zero_leaves_threads_alone() -> None:
    base = nice_of(here())
    ex = Executors.lowered(0)
    try:
        assert nice_of(ex.io.submit(here).result()) == base
    finally:
        ex.shutdown()


def test_never_raises_a_priority() -> None:
    """A thread already nicer (a unit's Nice=15) keeps its value: lowering to 10 would need
    privileges, and would undo what the administrator asked for."""

    def at_15_then_10() -> int:
        os.setpriority(os.PRIO_PROCESS, here(), 15)
        lower_thread_priority(10)
        return nice_of(here())

    t_result: list[int] = []
    t = threading.Thread(target=lambda: t_result.append(at_15_then_10()))
    t.start()
    t.join()
    assert t_result == [15]
