"""Hooks through the real daemon (issue 16): checkpoints land as versions and each
``version.created`` reaches a real program and a real webhook receiver on 127.0.0.1, with
valid signatures; a kill -9 in the middle of deliveries, or while the receiver is down,
still delivers every event at least once, duplicates carrying the same id and body; a job
that fails for good reaches a ``job.failed`` hook; ``cpvctl hooks``, ``hooks test``,
``status`` and ``/metrics`` show deliveries and failures, and never the secret."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, tags, versions_of, wait_for
from tests.hook_receiver import Receiver

SECRET = "e2e-hook-secret-value"
RECORDER = """#!/bin/sh
out="$1"; shift
{ printf '%s|%s\\n' "$CPV_EVENT" "$*"; cat; printf '\\n'; } >> "$out/$CPV_EVENT_ID"
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def recorder(root: Path) -> tuple[Path, Path]:
    script, out = root / "record.sh", root / "out"
    script.write_text(RECORDER)
    script.chmod(0o755)
    out.mkdir()
    return script, out


def hooks_toml(url: str, script: Path | None = None, out: Path | None = None) -> str:
    toml = f"""
[[hook]]
name = "web"
on = ["version.created", "job.failed"]
url = "{url}"
secret_env = "CPV_E2E_SECRET"
timeout = 5
"""
    if script is not None:
        toml += f"""
[[hook]]
name = "eval"
on = ["version.created"]
artifact = "team/*"
exec = ["{script}", "{out}", "{{artifact}}", "{{version}}", "{{tag}}", "{{path}}"]
"""
    return toml


def make(
    factory: Callable[..., DaemonProcess], root: Path, extra: str, **kw: object
) -> DaemonProcess:
    return factory(
        watches=[Watch(root / "ck", "team/model")],
        extra_toml=extra,
        env={"CPV_E2E_SECRET": SECRET},
        extra_daemon={"retry_max_seconds": 0.5},
        **kw,
    )


def burst(ck: Path, n: int, start: int = 0) -> None:
    ck.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (ck / f"epoch-{i}.bin").write_bytes(os.urandom(2048) + bytes([i]))


def created_versions(r: Receiver) -> dict[str, str]:
    """event id -> version, of the version.created events the receiver accepted."""
    return {
        x.event_id: x.json()["data"]["version"]
        for x in r.accepted()
        if x.headers["x-cpv-event"] == "version.created"
    }


def test_burst_reaches_exec_and_webhook_with_valid_signatures(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess], receiver: Receiver
) -> None:
    receiver.start()
    script, out = recorder(short_tmp)
    d = make(daemon_factory, short_tmp, hooks_toml(receiver.url, script, out))
    with d:
        burst(short_tmp / "ck", 8)
        wait_for(lambda: len(versions_of(d, "team/model")) == 8, timeout=120, what="8 versions")
        versions = set(versions_of(d, "team/model"))
        wait_for(lambda: set(created_versions(receiver).values()) == versions, timeout=60,
                 what="every version at the webhook")  # fmt: skip
        wait_for(lambda: len(os.listdir(out)) == 8, timeout=60, what="every version at eval")
        assert all(x.signed_with(SECRET) for x in receiver.received)
        for x in receiver.accepted():
            event = x.json()
            assert event["id"] == x.event_id and event["type"] == "version.created"
            assert event["data"]["tag"] == f"team/model@{event['data']['version']}"
        seen = {}
        for name in os.listdir(out):
            head = (out / name).read_text().splitlines()[0]
            kind, argv = head.split("|")
            artifact, version, tag, path = argv.split(" ")
            assert (kind, artifact) == ("version.created", "team/model")
            assert tag == f"team/model@{version}"
            assert Path(path).parent == short_tmp / "ck"
            seen[version] = name
        assert set(seen) == versions
        assert set(tags(d.registry)) == {f"team/model@{v}" for v in versions}

        wait_for(lambda: d.client().hooks()["hooks"][0]["pending"] == 0, what="outbox empty")
        listing = cpvctl(d.socket, "hooks", "--json")
        assert listing.returncode == 0, listing.stderr
        hooks = {h["name"]: h for h in json.loads(listing.stdout)["hooks"]}
        assert hooks["web"]["delivered"] == 8 and hooks["eval"]["delivered"] == 8
        text = cpvctl(d.socket, "hooks").stdout + cpvctl(d.socket, "status", "--json").stdout
        text += listing.stdout + d.client().metrics() + d.log()
        assert SECRET not in text and "secret-path-token" not in text
        assert 'cpv_hook_deliveries_total{hook="web"} 8.0' in d.client().metrics()


def test_kill_9_in_the_middle_of_deliveries_still_delivers_every_event(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess], receiver: Receiver
) -> None:
    receiver.delay = 0.4  # slow enough to kill the daemon with deliveries in flight
    receiver.start()
    d = make(daemon_factory, short_tmp, hooks_toml(receiver.url))
    with d:
        burst(short_tmp / "ck", 10)
        wait_for(lambda: len(versions_of(d, "team/model")) == 10, timeout=120, what="10 versions")
        wait_for(lambda: len(receiver.received) >= 2, timeout=60, what="some deliveries")
        assert len(created_versions(receiver)) < 10, "all delivered before the kill"
        d.kill()
        d.start()
        versions = set(versions_of(d, "team/model"))
        wait_for(lambda: set(created_versions(receiver).values()) == versions, timeout=60,
                 what="every version delivered after the restart")  # fmt: skip
    by_id: dict[str, set[bytes]] = {}
    for x in receiver.accepted():
        by_id.setdefault(x.event_id, set()).add(x.body)
    assert all(len(bodies) == 1 for bodies in by_id.values())  # a duplicate is the same event
    assert len(by_id) == 10  # one id per version, however often it was sent


def test_receiver_down_then_kill_9_then_up(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess], receiver: Receiver
) -> None:
    d = make(daemon_factory, short_tmp, hooks_toml(receiver.url))  # the receiver is down
    with d:
        burst(short_tmp / "ck", 3)
        wait_for(lambda: len(versions_of(d, "team/model")) == 3, timeout=120, what="3 versions")
        wait_for(lambda: d.client().status()["hooks"]["failing"], what="the failure in status")
        status = cpvctl(d.socket, "status")
        assert "hook web FAILING" in status.stdout and "cannot connect" in status.stdout
        assert "cpv_hook_failing{hook=\"web\"}" in d.client().metrics()
        burst(short_tmp / "ck", 2, start=3)  # versioning goes on while the hook fails
        wait_for(lambda: len(versions_of(d, "team/model")) == 5, timeout=120, what="5 versions")
        assert d.client().hooks()["hooks"][0]["pending"] == 5
        d.kill()
        receiver.start()
        d.start()
        versions = set(versions_of(d, "team/model"))
        wait_for(lambda: set(created_versions(receiver).values()) == versions, timeout=60,
                 what="the 5 events after the restart")  # fmt: skip


def test_hooks_test_and_a_job_failed_hook(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess], receiver: Receiver
) -> None:
    receiver.start()
    d = make(daemon_factory, short_tmp, hooks_toml(receiver.url))
    with d:
        res = cpvctl(d.socket, "hooks", "test", "web")
        assert res.returncode == 0, res.stderr
        assert "delivered" in res.stdout
        (got,) = receiver.accepted()
        assert got.headers["x-cpv-event"] == "hook.test" and got.signed_with(SECRET)
        res = cpvctl(d.socket, "hooks", "test", "nope")
        assert res.returncode == 1 and "no hook named 'nope'" in res.stderr

        blocker = d.root / "storage" / "files"  # the storage refuses every write
        if blocker.is_dir():
            shutil.rmtree(blocker)
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"not a directory")
        burst(short_tmp / "ck", 1)

        def job_failed() -> list[dict[str, object]]:
            got = receiver.accepted()
            return [x.json() for x in got if x.headers["x-cpv-event"] == "job.failed"]

        (failed,) = wait_for(job_failed, timeout=120, what="the job.failed event")
        assert failed["data"]["artifact"] == "team/model" and failed["data"]["error"]
        assert d.client().job(failed["data"]["job_id"])["state"] == "failed"
