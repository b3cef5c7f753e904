"""Hook delivery against real receivers: an HTTP server on 127.0.0.1 and real programs
(shell scripts), through the real outbox in a real state database and the real dispatcher.
Faults: 500 then success (same id), a redirect not followed, a hang past the timeout, a
missing or non-executable program, a non-zero exit; one slow hook does not hold up another;
a flood of 1,000 events drains with none lost and memory bounded."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import cpvd.hooks.dispatcher as dispatcher_mod
from cpvd.config.model import Config, DaemonConfig
from cpvd.hooks.dispatcher import Dispatcher
from cpvd.hooks.model import HookConfig
from cpvd.hooks.outbox import Outbox
from cpvd.state.db import StateDB
from tests.hook_receiver import Receiver

SECRET = "s3cr3t-for-tests"
RECORDER = """#!/bin/sh
out="$1"; shift
{ printf '%s|%s\\n' "$CPV_EVENT" "$*"; cat; printf '\\n'; } >> "$out/$CPV_EVENT_ID"
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A real program that appends each event it gets to ``out/<CPV_EVENT_ID>``."""
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    return script, out


class Rig:
    def __init__(self, db: StateDB, hooks: tuple[HookConfig, ...]) -> None:
        self.cfg = Config(daemon=DaemonConfig(retry_max_seconds=0.2), hooks=hooks)
        self.outbox = Outbox(db, lambda: self.cfg.hooks)
        self.backlog = False  # what the daemon's queue says: versions are waiting
        self.dispatcher = Dispatcher(lambda: self.cfg, self.outbox, lambda: self.backlog)
        self.outbox.notify = self.dispatcher.wake

    def record(self, n: int, type: str = "version.created") -> list[str]:
        ids = []
        for i in range(n):
            data = {"artifact": "team/m", "version": f"v1.{i}.0", "tag": f"team/m@v1.{i}.0",
                    "path": f"/ck/e{i}.pt"}  # fmt: skip
            event = self.outbox.record(type, data)
            assert event is not None
            ids.append(event.id)
        return ids


@pytest.fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    db = StateDB(tmp_path / "state.db")
    rigs: list[Rig] = []

    async def make(*hooks: HookConfig) -> Rig:
        rig = Rig(db, hooks)
        await rig.dispatcher.start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.dispatcher.stop()
    db.close()


async def until(pred: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def web(url: str, **kw: Any) -> HookConfig:
    return HookConfig(name="web", on=("version.created",), url=url, secret_env="CPV_T_SECRET",
                      timeout=kw.pop("timeout", 5.0), **kw)  # fmt: skip


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPV_T_SECRET", SECRET)


async def test_webhook_headers_and_signature(rig_factory: Any, receiver: Receiver) -> None:
    rig = await rig_factory(web(receiver.url))
    (event_id,) = rig.record(1)
    await until(lambda: receiver.accepted(), what="the webhook")
    (got,) = receiver.received
    assert got.event_id == event_id
    assert got.headers["x-cpv-event"] == "version.created"
    assert got.headers["content-type"] == "application/json"
    assert got.signed_with(SECRET)
    assert got.json()["id"] == event_id and got.json()["data"]["version"] == "v1.0.0"
    await until(lambda: rig.outbox.pending() == {}, what="the outbox to empty")


async def test_500_then_success_keeps_the_id(rig_factory: Any, receiver: Receiver) -> None:
    receiver.answers = [500, 503]
    rig = await rig_factory(web(receiver.url))
    (event_id,) = rig.record(1)
    await until(lambda: receiver.accepted(), what="the third attempt")
    assert [r.status for r in receiver.received] == [500, 503, 204]
    assert {r.event_id for r in receiver.received} == {event_id}
    assert len({r.body for r in receiver.received}) == 1  # the same bytes, the same signature
    record = rig.dispatcher.records["web"]
    assert record.failures == 2 and record.delivered == 1 and record.failing == 0


async def test_redirect_is_not_followed(rig_factory: Any, receiver: Receiver) -> None:
    receiver.answers = [301]
    rig = await rig_factory(web(receiver.url))
    rig.record(1)
    await until(lambda: rig.dispatcher.records["web"].failures >= 1, what="the 301")
    error = rig.dispatcher.records["web"].recent[0]["detail"]
    assert "HTTP 301" in error and "not followed" in error
    assert "secret-path-token" not in error  # the URL's path may be its secret
    await until(lambda: receiver.accepted(), what="the retry")
    assert len(receiver.received) == 2  # nothing went to the Location


async def test_a_hang_times_out_and_is_retried(rig_factory: Any, receiver: Receiver) -> None:
    receiver.delay = 1.0
    rig = await rig_factory(web(receiver.url, timeout=0.3))
    rig.record(1)
    await until(lambda: rig.dispatcher.records["web"].failures >= 1, what="a timeout")
    assert "did not answer within 0.3s" in (rig.dispatcher.records["web"].last_error or "")
    receiver.delay = 0.0
    await until(lambda: rig.outbox.pending() == {}, what="delivery once it answers")


async def test_refused_connection_then_receiver_up(rig_factory: Any, receiver: Receiver) -> None:
    receiver.stop()
    rig = await rig_factory(web(receiver.url))
    (event_id,) = rig.record(1)
    await until(lambda: rig.dispatcher.records["web"].failures >= 1, what="a refusal")
    assert "cannot connect" in (rig.dispatcher.records["web"].last_error or "")
    receiver.start()
    await until(lambda: receiver.accepted_ids() == {event_id}, what="delivery")


async def test_missing_secret_is_an_error_not_an_unsigned_post(
    rig_factory: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CPV_T_SECRET")
    rig = await rig_factory(web(receiver.url))
    rig.record(1)
    await until(lambda: rig.dispatcher.records["web"].failures >= 1, what="the failure")
    assert "CPV_T_SECRET is not set" in (rig.dispatcher.records["web"].last_error or "")
    assert receiver.received == []


async def test_exec_gets_argv_stdin_and_env(rig_factory: Any, recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    hook = HookConfig(name="ev", on=("version.created",),
                      exec=(str(script), str(out), "{artifact}", "{version}", "{x}"))  # fmt: skip
    rig = await rig_factory(hook)
    (event_id,) = rig.record(1)
    await until(lambda: (out / event_id).exists(), what="the program")
    await until(lambda: rig.outbox.pending() == {}, what="the outbox to empty")
    head, body = (out / event_id).read_text().splitlines()[:2]
    assert head == "version.created|team/m v1.0.0 {x}"
    assert '"id": "' + event_id in body


@pytest.mark.parametrize("problem", ["missing", "not executable", "exit 3"])
async def test_exec_failures_are_retried_and_visible(
    rig_factory: Any, tmp_path: Path, problem: str
) -> None:
    prog = tmp_path / "eval.sh"
    if problem == "not executable":
        prog.write_text("#!/bin/sh\nexit 0\n")
    elif problem == "exit 3":
        prog.write_text("#!/bin/sh\necho 'CUDA out of memory' >&2\nexit 3\n")
        prog.chmod(0o755)
    rig = await rig_factory(HookConfig(name="ev", on=("job.failed",), exec=(str(prog),)))
    rig.record(1, "job.failed")
    await until(lambda: rig.dispatcher.records["ev"].failures >= 2, what="two attempts")
    error = rig.dispatcher.records["ev"].last_error or ""
    expected = {"missing": "program not found", "not executable": "not executable",
                "exit 3": "exited with status 3: CUDA out of memory"}[problem]  # fmt: skip
    assert expected in error
    assert rig.outbox.pending() == {"ev": 1}
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    await until(lambda: rig.outbox.pending() == {}, what="delivery once the program works")


async def test_exec_timeout_kills_the_program(rig_factory: Any, tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    prog = tmp_path / "slow.sh"
    prog.write_text(f"#!/bin/sh\nsleep 30\ntouch {marker}\n")
    prog.chmod(0o755)
    rig = await rig_factory(HookConfig(name="ev", on=("version.created",), exec=(str(prog),),
                                       timeout=0.3))  # fmt: skip
    rig.record(1)
    await until(lambda: rig.dispatcher.records["ev"].failures >= 1, what="the timeout")
    assert "over its timeout of 0.3s" in (rig.dispatcher.records["ev"].last_error or "")


async def test_a_slow_hook_does_not_hold_up_another(
    rig_factory: Any, receiver: Receiver, recorder: tuple[Path, Path]
) -> None:
    script, out = recorder
    receiver.delay = 2.0  # every answer takes 2 s
    fast = HookConfig(name="fast", on=("version.created",), exec=(str(script), str(out)))
    rig = await rig_factory(web(receiver.url, timeout=10.0), fast)
    ids = rig.record(5)
    await until(lambda: all((out / i).exists() for i in ids), what="the fast hook")
    await until(lambda: "fast" not in rig.outbox.pending(), what="the fast hook's outbox")
    assert len(receiver.received) <= 1  # the slow one is still on its first
    assert rig.outbox.pending()["web"] >= 4


async def test_artifact_filter(rig_factory: Any, recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    hook = HookConfig(name="ev", on=("version.created",), exec=(str(script), str(out)),
                      artifact="vision/*")  # fmt: skip
    rig = await rig_factory(hook)
    assert rig.outbox.record("version.created", {"artifact": "nlp/bert"}) is None
    kept = rig.outbox.record("version.created", {"artifact": "vision/r50"})
    assert kept is not None
    await until(lambda: (out / kept.id).exists(), what="the matching event")
    assert os.listdir(out) == [kept.id]


async def test_flood_of_1000_drains_with_none_lost_and_memory_bounded(
    rig_factory: Any, receiver: Receiver, recorder: tuple[Path, Path]
) -> None:
    script, out = recorder
    hooks = (web(receiver.url), HookConfig(name="ev", on=("version.created",),
                                           exec=(str(script), str(out))))  # fmt: skip
    receiver.answers = [500] * 3  # a few failures in the middle of it
    rig = await rig_factory(*hooks)
    before, peak = _rss(), 0
    ids = rig.record(1000)

    def drained() -> bool:
        nonlocal peak
        peak = max(peak, _rss())
        return rig.outbox.pending() == {}

    await until(drained, timeout=300, what="the outbox to drain")
    assert receiver.accepted_ids() == set(ids)
    assert all(r.signed_with(SECRET) for r in receiver.received)
    assert set(os.listdir(out)) == set(ids)
    # the lanes hold a batch of 50 events at a time, not the backlog (a 1,000-event backlog
    # held in memory is a few MiB; this bound catches anything growing per event)
    assert peak - before < 40 * 2**20, f"RSS grew {(peak - before) / 2**20:.1f} MiB"
    with rig.outbox.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM hook_events").fetchone()[0] == 0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_sighup_adds_a_hook(rig_factory: Any, recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    rig = await rig_factory()
    assert rig.record is not None and rig.outbox.record("version.created", {}) is None
    rig.cfg = replace(rig.cfg, hooks=(HookConfig(name="ev", on=("version.created",),
                                                 exec=(str(script), str(out))),))  # fmt: skip
    rig.dispatcher.sync()
    (event_id,) = rig.record(1)
    await until(lambda: (out / event_id).exists(), what="the new hook")


async def test_stopping_kills_a_running_program_and_keeps_its_delivery(
    rig_factory: Any, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    prog = tmp_path / "long-eval.sh"
    prog.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    prog.chmod(0o755)
    rig = await rig_factory(HookConfig(name="ev", on=("version.created",), exec=(str(prog),)))
    rig.record(1)
    await until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the program")
    pid = int(pidfile.read_text())
    await rig.dispatcher.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert rig.outbox.pending() == {"ev": 1}  # delivered again at the next start


async def test_a_backlog_of_versions_goes_first(
    rig_factory: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await rig_factory(web(receiver.url))
    rig.backlog = True
    ids = rig.record(3)
    await asyncio.sleep(1.5)
    assert receiver.received == []  # held back while versions wait
    rig.backlog = False
    await until(lambda: receiver.accepted_ids() == set(ids), what="delivery after the burst")

    monkeypatch.setattr(dispatcher_mod, "DEFER_MAX", 0.3)  # a backlog that never clears
    rig.backlog = True
    late = rig.record(1)
    await until(lambda: receiver.accepted_ids() >= set(late), what="delivery despite it")
