"""Issue 3, "Done when" 3, 4 and 5: rename-in, work done while stopped, restarts and
crashes that version nothing twice, revert through the real CLI, pull, and a colleague's
fresh clone + ``dvc pull`` against S3 (moto's server) giving the exact bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import (
    DaemonProcess,
    Watch,
    cpvctl,
    event_history,
    queue_depth,
    tags,
    versions_of,
    wait_for,
)
from tests.integration.engine_helpers import dvc, run, tree_bytes

A = "team/model"
QUIET = 0.3 + 2.5  # settle + one rescan period (the harness sets rescan_seconds = 2)


def hf_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(os.urandom(4000))
    (path / "sub").mkdir()
    (path / "sub" / "optimizer.bin").write_bytes(os.urandom(1500))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 7}))
    return path


def test_rename_in_offline_drops_restart_revert_pull_and_fresh_clone(
    short_tmp: Path,
    bare_remote: Path,
    moto_server: str,
    s3_bucket: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    ck, outside = short_tmp / "ck", short_tmp / "outside"
    outside.mkdir()
    d = daemon_factory(
        watches=[Watch(ck, A)],
        storage_url=f"s3://{s3_bucket}/cpv",
        endpoint_url=moto_server,
        remote=bare_remote,
    )
    originals: dict[str, dict[str, bytes]] = {}
    with d:
        # a file renamed in from outside the tree (arrives as `created` only)
        (outside / "epoch-1.bin").write_bytes(os.urandom(20_000))
        originals["v1.0.0"] = tree_bytes(outside / "epoch-1.bin")
        os.rename(outside / "epoch-1.bin", ck / "epoch-1.bin")
        wait_for(lambda: versions_of(d, A) == ["v1.0.0"], timeout=30, what="v1.0.0")
        # a whole directory renamed in
        src = hf_dir(outside / "checkpoint-7")
        originals["v1.1.0"] = tree_bytes(src)
        os.rename(src, ck / "checkpoint-7")
        wait_for(lambda: versions_of(d, A)[0] == "v1.1.0", timeout=30, what="v1.1.0")
    assert d.proc is None

    # dropped while the daemon is stopped
    (ck / "epoch-2.bin").write_bytes(os.urandom(3000))
    (ck / "epoch-3.bin").write_bytes(os.urandom(3000))
    with d:
        wait_for(lambda: len(versions_of(d, A)) == 4, timeout=30, what="the offline drops")
    # a clean restart, then a crash (kill -9) and a start: nothing is versioned twice
    d.start()
    time.sleep(QUIET)
    d.kill()
    assert d.socket.exists()  # left behind by the crash; the next start replaces it
    d.start()
    time.sleep(QUIET)
    wait_for(lambda: queue_depth(d) == 0, what="idle queue")
    assert versions_of(d, A) == ["v1.3.0", "v1.2.0", "v1.1.0", "v1.0.0"]

    # revert with the real CLI: the bytes come back and are not versioned again
    (ck / "epoch-1.bin").unlink()
    res = cpvctl(d.socket, "revert", A, "v1.0")
    assert res.returncode == 0, res.stderr
    assert str(ck / "epoch-1.bin") in res.stdout
    assert tree_bytes(ck / "epoch-1.bin") == originals["v1.0.0"]
    time.sleep(QUIET)
    wait_for(lambda: queue_depth(d) == 0, what="idle queue")
    assert len(versions_of(d, A)) == 4
    assert d.client().show(A, "v1.0.0")["current"] is True
    # the next checkpoint continues the numbering, with the reverted-to version as parent
    (ck / "epoch-4.bin").write_bytes(os.urandom(3000))
    wait_for(lambda: versions_of(d, A)[0] == "v1.4.0", timeout=30, what="v1.4.0")
    assert d.client().show(A, "v1.4.0")["parent"] == "v1.0.0"

    # cpvctl pull (CLI for the directory, Client for the file): exact bytes, nothing else
    out = short_tmp / "out"
    res = cpvctl(d.socket, "pull", f"{A}@v1.1", "-o", str(out / "dir"))
    assert res.returncode == 0, res.stderr
    assert [p.name for p in (out / "dir").iterdir()] == ["checkpoint-7"]
    assert tree_bytes(out / "dir" / "checkpoint-7") == originals["v1.1.0"]
    # a script asking for JSON gets its failures as JSON too (the daemon's error code)
    res = cpvctl(d.socket, "--json", "show", f"{A}@v9.9.9")
    assert res.returncode == 1 and res.stdout == "", res
    err = json.loads(res.stderr)["error"]
    assert err["exit_code"] == 1 and "v9.9.9" in err["message"], err
    assert err["code"] not in ("error", "usage_error"), err
    got = d.client().pull(A, "v1.0.0", out / "file")
    assert got == out / "file" / "epoch-1.bin"
    assert tree_bytes(got) == originals["v1.0.0"]

    # a colleague: fresh clone of the registry remote + dvc pull -j 1 (one stream: moto)
    wait_for(lambda: len(tags(bare_remote)) == 5, timeout=30, what="tags on the remote")
    wait_for(lambda: d.client().status()["registry"]["unpushed"] == 0, what="everything pushed")
    d.stop()
    clone = short_tmp / "clone"
    run(["git", "clone", "-q", str(bare_remote), str(clone)])
    pointer = clone / "artifacts" / "team" / "model" / "checkpoint"
    for version in ("v1.0.0", "v1.1.0"):
        run(["git", "checkout", "-q", f"{A}@{version}"], cwd=clone)
        dvc("pull", "-q", "-j", "1", cwd=clone, endpoint=moto_server)
        assert tree_bytes(pointer) == originals[version], version


def test_crash_with_queued_work_versions_it_once(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """kill -9 while a checkpoint is queued: the recovered job and the start-up rescan
    both see it; exactly one version results."""
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, A)])
    d.start()
    d.client().pause(A)  # keeps the job queued (pause is not persisted)
    data = os.urandom(5000)
    (ck / "epoch-1.bin").write_bytes(data)
    wait_for(lambda: any(e["type"] == "queued" for e in event_history(d.socket)), what="queued job")
    d.kill()
    d.start()
    wait_for(lambda: versions_of(d, A) == ["v1.0.0"], timeout=30, what="v1.0.0")
    time.sleep(QUIET)
    wait_for(lambda: queue_depth(d) == 0, what="idle queue")
    assert versions_of(d, A) == ["v1.0.0"]
    assert d.client().show(A, "v1.0.0")["size"] == len(data)
    # and a later restart does not version it again either
    d.stop()
    d.start()
    time.sleep(QUIET)
    wait_for(lambda: queue_depth(d) == 0, what="idle queue")
    assert versions_of(d, A) == ["v1.0.0"]
    assert d.stop() == 0


def test_revert_over_a_rewritten_file_keeps_a_backup_and_is_not_versioned_again(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """The last.ckpt case: a trainer rewrites one name in place; reverting puts the old
    bytes back over the newer file (kept as a backup) without making a version."""
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, A)])
    old, new = os.urandom(5000), os.urandom(6000)
    with d:
        (ck / "last.bin").write_bytes(old)
        wait_for(lambda: versions_of(d, A) == ["v1.0.0"], timeout=30, what="v1.0.0")
        (ck / "last.bin").write_bytes(new)
        wait_for(lambda: versions_of(d, A)[0] == "v1.1.0", timeout=30, what="v1.1.0")
        res = cpvctl(d.socket, "--json", "revert", f"{A}@v1.0.0")
        assert res.returncode == 0, res.stderr
        (item,) = json.loads(res.stdout)["reverted"]
        assert (ck / "last.bin").read_bytes() == old
        assert item["backup"] and Path(item["backup"]).read_bytes() == new
        assert str(d.state_dir) in item["backup"]
        time.sleep(QUIET)
        wait_for(lambda: queue_depth(d) == 0, what="idle queue")
        assert versions_of(d, A) == ["v1.1.0", "v1.0.0"]
        # and across a restart too
    with d:
        time.sleep(QUIET)
        wait_for(lambda: queue_depth(d) == 0, what="idle queue")
        assert versions_of(d, A) == ["v1.1.0", "v1.0.0"]
        assert d.client().show(A, "v1.0.0")["current"] is True
