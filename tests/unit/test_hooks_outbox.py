"""The outbox in a real state database: an event is committed with the job end it reports
or not at all; nothing is written when no hook wants it; deliveries are kept until taken,
due again at start-up, and capped; bus events reach it through the tap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cpvd.hooks.outbox as outbox_mod
from cpvd.api.events import EventBus
from cpvd.hooks.bridge import bus_tap
from cpvd.hooks.model import HookConfig
from cpvd.hooks.outbox import Outbox
from cpvd.state.db import StateDB
from cpvd.state.ledger import Ledger
from cpvd.state.outcome import end_job
from cpvd.state.queue import JobQueue

HOOKS = (
    HookConfig(name="web", on=("version.created", "stage.moved", "version.pruned"), url="http://127.0.0.1:9/"),
    HookConfig(name="eval", on=("version.created",), exec=("/bin/true",), artifact="team/*"),
)


@pytest.fixture
def db(short_tmp: Path) -> Iterator[StateDB]:
    d = StateDB(short_tmp / "state.db")
    yield d
    d.close()


@pytest.fixture
def outbox(db: StateDB) -> Outbox:
    return Outbox(db, lambda: HOOKS)


def _rows(db: StateDB, table: str) -> int:
    with db.read() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_the_event_commits_with_the_job_end_or_not_at_all(db: StateDB, outbox: Outbox) -> None:
    queue, ledger = JobQueue(db), Ledger(db)
    job = queue.add("team/m", "/ck/a.pt")

    def record_then_crash() -> None:
        outbox.record("version.created", {"artifact": "team/m", "version": "v1.0.0"})
        raise RuntimeError("killed between the event and the commit")

    with pytest.raises(RuntimeError):
        end_job(queue, ledger, job, "done", {}, "0" * 32, "v1.0.0", record_then_crash)
    assert queue.get(job.id).state == "queued"  # type: ignore[union-attr]
    assert _rows(db, "hook_events") == 0 and _rows(db, "hook_deliveries") == 0

    def record() -> None:
        outbox.record("version.created", {"artifact": "team/m", "version": "v1.0.0"})

    end_job(queue, ledger, job, "done", {}, "0" * 32, "v1.0.0", record)
    assert queue.get(job.id).state == "done"  # type: ignore[union-attr]
    assert outbox.pending() == {"web": 1, "eval": 1}


def test_no_hook_wants_it_nothing_is_written(db: StateDB, outbox: Outbox) -> None:
    assert outbox.record("job.failed", {"artifact": "team/m"}) is None
    assert outbox.record("stage.moved", {"artifact": "nlp/x"}) is not None  # web only
    assert outbox.pending() == {"web": 1}
    assert _rows(db, "hook_events") == 1


def test_deliveries_stay_until_taken_and_are_due_again_after_a_restart(
    db: StateDB, outbox: Outbox
) -> None:
    first = outbox.record("version.created", {"artifact": "team/m", "version": "v1.0.0"})
    second = outbox.record("version.created", {"artifact": "team/m", "version": "v1.1.0"})
    assert first is not None and second is not None
    now = time.time()
    due = outbox.due("web", now)
    assert [d.event.id for d in due] == [first.id, second.id]
    assert due[0].event.body() == first.body()  # the same bytes at every attempt
    outbox.failed(due[0].seq, "HTTP 500", now + 3600)
    assert [d.event.id for d in outbox.due("web", time.time())] == [second.id]
    outbox.delivered([due[1]])
    assert _rows(db, "hook_events") == 2  # eval still waits for both

    again = Outbox(db, lambda: HOOKS)  # what the next start sees
    assert again.recover() == 3
    (retried,) = again.due("web", time.time())
    assert retried.event.id == first.id and retried.attempts == 1
    again.delivered([retried, *again.due("eval", time.time())])
    assert _rows(db, "hook_events") == 0 and again.pending() == {}


def test_a_hook_backlog_is_capped(
    db: StateDB, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_mod, "MAX_PENDING", 3)
    ids = []
    for i in range(5):
        event = outbox.record("stage.moved", {"artifact": "x/y", "version": f"v{i}"})
        assert event is not None
        ids.append(event.id)
    assert outbox.pending() == {"web": 3} and outbox.dropped == 2
    assert [d.event.id for d in outbox.due("web", time.time())] == ids[2:]
    assert _rows(db, "hook_events") == 3


def test_bus_events_reach_the_outbox_through_the_tap(outbox: Outbox) -> None:
    bus = EventBus()
    bus.tap(bus_tap(outbox))
    bus.publish("promoted", artifact="team/m", version="v1.0.0", stage="prod", tag="team/m#prod#1")
    bus.publish("versioned", artifact="team/m", version="v1.0.0")  # recorded by the worker
    bus.publish("version.pruned", artifact="team/m", version="v0.9.0")  # from retention
    moved, pruned = outbox.due("web", time.time())
    assert moved.event.type == "stage.moved" and moved.event.data["stage"] == "prod"
    assert pruned.event.type == "version.pruned" and pruned.event.data["version"] == "v0.9.0"
    assert outbox.pending() == {"web": 2}
