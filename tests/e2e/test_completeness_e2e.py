"""Issue 3, "Done when" 1 and 2, through the real daemon and real watchdog.

Each writer works in its own watched directory (its own artifact), so the versions of one
cannot hide a mistake in another. Timing is never asserted: the measured latencies are
printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.harness import (
    DaemonProcess,
    Watch,
    event_history,
    queue_depth,
    versions_of,
    wait_for,
)
from tests.integration.engine_helpers import dvc, run, tree_bytes


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def safetensors_bytes(n: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + os.urandom(4 * n)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_drop_new_and_same_bytes(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "e2e/drop")])
    with d:
        t0 = time.monotonic()
        (ck / "a.bin").write_bytes(b"A" * 4096)
        wait_for(lambda: versions_of(d, "e2e/drop") == ["v1.0.0"], timeout=20, what="v1.0.0")
        first = time.monotonic() - t0
        t0 = time.monotonic()
        (ck / "b.bin").write_bytes(b"B" * 4096)
        wait_for(lambda: versions_of(d, "e2e/drop")[0] == "v1.1.0", timeout=20, what="v1.1.0")
        second = time.monotonic() - t0
        print(f"\ndrop -> version: {first:.2f}s, {second:.2f}s (settle 0.3s)")
        # the same bytes again (another name, then the same name rewritten): nothing new
        (ck / "b-copy.bin").write_bytes(b"B" * 4096)
        wait_for(
            lambda: any(
                e["type"] in ("unchanged", "skipped")
                and e["data"].get("path", "").endswith("b-copy.bin")
                for e in event_history(d.socket)
            ),
            timeout=20,
            what="the copy judged unchanged",
        )
        (ck / "a.bin").write_bytes(b"A" * 4096)  # same content, new mtime
        time.sleep(0.3 + 2.5)  # settle + one rescan period
        wait_for(lambda: queue_depth(d) == 0, what="idle queue")
        assert versions_of(d, "e2e/drop") == ["v1.1.0", "v1.0.0"]
        shown = d.client().show("e2e/drop", "v1.1.0")
        assert shown["md5"] == md5(b"B" * 4096)


def _slow_writer(path: Path, pieces: list[bytes], pause: float) -> bytes:
    """One open, many writes with pauses shorter than the quiet period: one version."""
    with open(path, "wb") as f:
        for p in pieces:
            f.write(p)
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause)
    return b"".join(pieces)


def _torch_save_like(path: Path, entries: dict[str, bytes], pause: float) -> bytes:
    """zipfile written in place entry by entry (central directory last), pauses longer than
    the quiet period: only the zip validation can keep it from being versioned early."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
            f.flush()
            time.sleep(pause)
    return path.read_bytes()


def _hf_checkpoint(root: Path, step: int, pause: float, via_tmp: bool) -> dict[str, bytes]:
    files = {
        "model.safetensors": safetensors_bytes(256),
        "optimizer.pt": zip_bytes({"archive/data.pkl": os.urandom(512)}),
        "scheduler.pt": zip_bytes({"archive/data.pkl": os.urandom(64)}),
        "trainer_state.json": json.dumps({"global_step": step}).encode(),
    }
    final = root / f"checkpoint-{step}"
    work = root / f"tmp-checkpoint-{step}" if via_tmp else final
    work.mkdir()
    for name, data in files.items():
        (work / name).write_bytes(data)
        time.sleep(pause)
    if via_tmp:
        os.rename(work, final)
    return files


def _dcp_checkpoint(root: Path, name: str, pause: float) -> dict[str, bytes]:
    d = root / name
    d.mkdir()
    files = {"__0_0.distcp": os.urandom(3000), "__1_0.distcp": os.urandom(2000)}
    for fname, data in files.items():
        (d / fname).write_bytes(data)
        time.sleep(pause)
    meta = os.urandom(300)
    (d / ".metadata.tmp").write_bytes(meta)
    time.sleep(pause)
    os.rename(d / ".metadata.tmp", d / ".metadata")
    files[".metadata"] = meta
    return files


def test_writers_make_one_version_each_after_completion(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    roots = {a: short_tmp / a.split("/")[1] for a in ("w/slow", "w/zip", "w/hf", "w/dcp", "w/tmp")}
    watches = [Watch(p, a, settle_seconds=1.5 if a == "w/slow" else 0.3) for a, p in roots.items()]
    d = daemon_factory(watches=watches)
    pause = 0.6  # longer than the 0.3 s quiet period of the zip/hf/dcp watches
    with d, ThreadPoolExecutor(4) as pool:
        # temporary names, present the whole time and rewritten: never versions
        tmp = roots["w/tmp"]
        (tmp / "model.pt.tmp").write_bytes(b"partial")
        (tmp / "shard.part").write_bytes(b"partial")
        (tmp / ".hidden").write_bytes(b"dot-file")
        slow_pieces = [os.urandom(1000) for _ in range(15)]
        slow = pool.submit(_slow_writer, roots["w/slow"] / "run.bin", slow_pieces, 0.2)
        entries = {f"archive/data/{i}": os.urandom(2000) for i in range(4)}
        entries["archive/data.pkl"] = os.urandom(100)
        zipped = pool.submit(_torch_save_like, roots["w/zip"] / "model.pt", entries, pause)
        hf = pool.submit(_hf_checkpoint, roots["w/hf"], 100, pause, False)
        dcp = pool.submit(_dcp_checkpoint, roots["w/dcp"], "step-10", pause)
        slow_bytes, zip_final, hf_files, dcp_files = (
            slow.result(),
            zipped.result(),
            hf.result(),
            dcp.result(),
        )
        # the tmp watch also gets one real checkpoint, written as temp + rename
        (tmp / "last.pt.tmp").write_bytes(zip_final)
        (tmp / "model.pt.tmp").write_bytes(b"partial, longer now")
        os.replace(tmp / "last.pt.tmp", tmp / "last.pt")
        # HF's newer way: written as tmp-checkpoint-N, then renamed
        hf2 = pool.submit(_hf_checkpoint, roots["w/hf"], 200, 0.1, True)
        hf2_files = hf2.result()

        def all_versioned() -> bool:
            return (
                len(versions_of(d, "w/slow")) >= 1
                and len(versions_of(d, "w/zip")) >= 1
                and len(versions_of(d, "w/hf")) >= 2
                and len(versions_of(d, "w/dcp")) >= 1
                and len(versions_of(d, "w/tmp")) >= 1
            )

        wait_for(all_versioned, timeout=30, what="every writer's version")
        time.sleep(1.5 + 2.5)  # a quiet period and a rescan: nothing more may appear
        wait_for(lambda: queue_depth(d) == 0, what="idle queue")
        c = d.client()
        assert versions_of(d, "w/slow") == ["v1.0.0"]
        assert c.show("w/slow", "v1.0.0")["md5"] == md5(slow_bytes)
        assert versions_of(d, "w/zip") == ["v1.0.0"]
        assert c.show("w/zip", "v1.0.0")["md5"] == md5(zip_final)
        assert versions_of(d, "w/hf") == ["v1.1.0", "v1.0.0"]
        assert versions_of(d, "w/dcp") == ["v1.0.0"]
        assert versions_of(d, "w/tmp") == ["v1.0.0"]
        assert c.show("w/tmp", "v1.0.0")["md5"] == md5(zip_final)
        # directory versions hold every file, .metadata included, with the final bytes
        out = short_tmp / "out"
        for artifact, version, name, files in (
            ("w/hf", "v1.0.0", "checkpoint-100", hf_files),
            ("w/hf", "v1.1.0", "checkpoint-200", hf2_files),
            ("w/dcp", "v1.0.0", "step-10", dcp_files),
        ):
            got = c.pull(artifact, version, out / artifact.replace("/", "-") / version)
            assert got.name == name
            assert {p.name: p.read_bytes() for p in got.iterdir()} == files
        got = c.pull("w/slow", "v1.0.0", out / "slow")
        assert got.read_bytes() == slow_bytes
        # no temporary name was ever even detected
        history = event_history(d.socket)
        touched = [
            e["data"].get("path", "")
            for e in history
            if e["type"] in ("detected", "queued", "versioned")
        ]
        assert touched, history
        bad = [
            p
            for p in touched
            if p.endswith((".tmp", ".part", ".hidden")) or "/tmp-checkpoint-" in p
        ]
        assert not bad, bad


def test_invalid_checkpoint_waits_with_a_reason_then_versions_once_valid(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A torn zip (a writer that died, or stalls mid-write) is listed as waiting, never
    versioned while invalid; once whole it becomes one version with its final bytes."""
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "w/torn")])
    whole = zip_bytes({f"archive/data/{i}": os.urandom(3000) for i in range(3)})
    with d:
        (ck / "model.pt").write_bytes(whole[: len(whole) // 2])

        def waiting() -> list[dict[str, str]]:
            return [w for w in d.client().status()["waiting"] if w["path"] == str(ck / "model.pt")]

        found = wait_for(waiting, timeout=20, what="model.pt listed as waiting")
        assert "zip" in found[0]["reason"], found
        assert any(e["type"] == "waiting" for e in event_history(d.socket))
        time.sleep(1.5)  # several re-checks: still not a version
        assert versions_of(d, "w/torn") == []
        (ck / "model.pt").write_bytes(whole)
        wait_for(lambda: versions_of(d, "w/torn") == ["v1.0.0"], timeout=20, what="v1.0.0")
        assert d.client().show("w/torn", "v1.0.0")["md5"] == md5(whole)
        assert waiting() == []


def test_directory_with_empty_files_is_versioned_and_pulls_back(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Empty files of no known format inside a directory checkpoint (markers, empty logs)
    are content like any other: the checkpoint must not wait for them forever, and
    ``dvc pull`` in a fresh clone gives them back (empty, with the same names)."""
    ck = short_tmp / "ck"
    ck.mkdir()
    d = daemon_factory(watches=[Watch(ck, "hf/empty")], remote=bare_remote)
    tmp = short_tmp / "checkpoint-3"
    (tmp / "logs").mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(safetensors_bytes(4096))
    (tmp / "added_tokens.txt").write_bytes(b"")
    (tmp / "logs" / "events.log").write_bytes(b"")
    (tmp / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    original = tree_bytes(tmp)
    with d:
        os.rename(tmp, ck / "checkpoint-3")
        wait_for(lambda: versions_of(d, "hf/empty") == ["v1.0.0"], timeout=30, what="v1.0.0")
        wait_for(lambda: d.client().status()["registry"]["unpushed"] == 0, what="pushed")
    clone = short_tmp / "clone"
    run(["git", "clone", "-q", str(bare_remote), str(clone)])
    dvc("pull", "-q", cwd=clone)
    assert tree_bytes(clone / "artifacts" / "hf" / "empty" / "checkpoint") == original
