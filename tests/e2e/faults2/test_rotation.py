"""Case 7: rotation and rewrites.

Trainers delete checkpoints right after writing them (``save_total_limit``) and rewrite
``last.ckpt`` in place. Whatever the timing, a checkpoint the daemon detected ends as a
version made from its snapshot or is reported as skipped, never as a failure; and no
version ever holds bytes the trainer did not write as one whole checkpoint (a torn copy).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.faults2.helpers import EventLog, idle
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "team/rotate"
FINAL = ("versioned", "skipped", "unchanged")


def outcome(events: EventLog, path: Path) -> tuple[str, dict[str, Any]] | None:
    for event, data in list(events.events):
        if event == "failed":
            raise AssertionError(f"a checkpoint failed instead of versioned/skipped: {data}")
        if event in FINAL and data.get("path") == str(path):
            return event, data
    return None


def detected(events: EventLog, path: Path) -> bool:
    return any(e.get("path") == str(path) for e in events.of("detected"))


def stored_versions(d: DaemonProcess) -> list[dict[str, Any]]:
    return list(d.client().versions(ARTIFACT))


def check_pulls_back(d: DaemonProcess, out: Path, written: dict[str, bytes]) -> None:
    """Every version's bytes pulled back equal one whole checkpoint the trainer wrote."""
    for v in stored_versions(d):
        got = Path(d.client().pull(ARTIFACT, v["version"], out / v["version"]))
        if got.is_dir():
            files = sorted(p for p in got.rglob("*") if p.is_file())
            blob = b"".join(p.relative_to(got).as_posix().encode() + p.read_bytes() for p in files)
        else:
            blob = got.read_bytes()
        assert hashlib.md5(blob).hexdigest() in written, f"{v['tag']} holds bytes never written"


def zip_bytes(payload: bytes) -> bytes:
    """A ``torch.save``-like zip (stored, central directory last) around ``payload``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data/0", payload)
    return buf.getvalue()


def dir_blob(root: Path) -> bytes:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)


def test_checkpoints_deleted_right_after_detection_are_versioned_or_skipped(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=0.2)])
    rng = random.Random(7)
    written: dict[str, bytes] = {}  # md5 of the whole checkpoint -> marker
    paths: list[Path] = []
    with d:
        events = EventLog(d)
        try:
            for i in range(12):
                if i % 2:  # a Hugging Face style directory, deleted as a whole
                    path = ck / f"checkpoint-{i}"
                    tmp = ck / f"tmp-checkpoint-{i}"
                    tmp.mkdir()
                    for j in range(24):
                        (tmp / f"shard-{j:02d}.bin").write_bytes(rng.randbytes(1 << 20))
                    (tmp / "trainer_state.json").write_text(f'{{"step": {i}}}')
                    written[hashlib.md5(dir_blob(tmp)).hexdigest()] = b""
                    os.rename(tmp, path)
                else:
                    path = ck / f"epoch-{i}.bin"
                    data = rng.randbytes(24 << 20)
                    written[hashlib.md5(data).hexdigest()] = b""
                    path.write_bytes(data)
                paths.append(path)
                # the worst moment: the daemon has just decided to take it
                events.wait(lambda ev, p=path: detected(ev, p), what=f"{path.name} detected")
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            results = {
                p: events.wait(lambda ev, p=p: outcome(ev, p), what=f"outcome of {p.name}")
                for p in paths
            }
        finally:
            events.close()
        wait_for(lambda: idle(d), what="idle")
        status = d.client().status()
        assert status["queue"]["failed"] == 0, status["jobs"]
        kinds = [r[0] for r in results.values()]
        print(f"rotation: {kinds.count('versioned')} versioned, {kinds.count('skipped')} skipped")
        versions = stored_versions(d)
        assert len(versions) == kinds.count("versioned")
        for p, (event, data) in results.items():
            if event == "versioned":
                assert data["size"] > 0 and Path(data["path"]) == p
        check_pulls_back(d, short_tmp / "out", written)


def test_rewrite_while_waiting_to_be_snapshotted_is_copied_again_whole(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Deterministic: a full snapshot store holds the copy back (worker paused), the file
    is rewritten longer in place, then space is freed. The copy must notice the change and
    start over: the version is the whole new file, not its first len(old) bytes."""
    ck = short_tmp / "ck"
    d = daemon_factory(
        watches=[Watch(ck, ARTIFACT, settle_seconds=0.2)],
        extra_daemon={"snapshot_limit_bytes": 1_000_000},
    )
    with d:
        events = EventLog(d)
        try:
            d.client().pause(None)
            (ck / "first.bin").write_bytes(os.urandom(2_000_000))
            events.wait(lambda ev: ev.of("queued"), what="first.bin queued")
            last = ck / "last.ckpt"
            old = zip_bytes(os.urandom(600_000))
            last.write_bytes(old)
            events.wait(lambda ev: detected(ev, last), what="last.ckpt detected")
            wait_for(lambda: "snapshot store full" in d.log(), what="the copy waiting for space")
            new = zip_bytes(os.urandom(900_000))
            with open(last, "r+b") as f:  # in place, like torch.save over last.ckpt
                f.write(new)
            d.client().resume(None)
            events.wait(
                lambda ev: [e for e in ev.of("versioned") if e["path"] == str(last)],
                what="last.ckpt versioned",
            )
            wait_for(lambda: idle(d), what="idle")
            time.sleep(1.0)  # the rewrite's own detection settles and is handled
            wait_for(lambda: idle(d), what="idle")
        finally:
            events.close()
        mine = [v for v in stored_versions(d) if v["name"] == "last.ckpt"]
        assert [(v["md5"], v["size"]) for v in mine] == [
            (hashlib.md5(new).hexdigest(), len(new))
        ], mine
        assert "changed while snapshotting" in d.log()
        assert d.client().status()["queue"]["failed"] == 0


def test_last_ckpt_rewritten_in_place_never_gives_a_torn_version(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """``last.ckpt`` rewritten in place again and again, chunk by chunk, with pauses around
    the quiet period: every version is one whole content, and the last one is versioned."""
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=0.2)])
    rng = random.Random(11)
    written: dict[str, bytes] = {}
    last = ck / "last.ckpt"
    with d:
        for _round in range(16):
            data = zip_bytes(rng.randbytes(rng.choice((4, 8, 16)) << 20))
            written[hashlib.md5(data).hexdigest()] = b""
            with open(last, "r+b" if last.exists() else "wb") as f:
                for off in range(0, len(data), 1 << 20):
                    f.write(data[off : off + (1 << 20)])
                    f.flush()
                    time.sleep(0.002)
                f.truncate()
            time.sleep(rng.uniform(0.0, 0.6))
        final = hashlib.md5(last.read_bytes()).hexdigest()
        wait_for(
            lambda: (vs := stored_versions(d)) and vs[0]["md5"] == final,
            timeout=60,
            what="the final content versioned",
        )
        wait_for(lambda: idle(d), what="idle")
        versions = stored_versions(d)
        md5s = [v["md5"] for v in versions]
        assert set(md5s) <= set(written), "a version holds bytes never written whole"
        retries = d.log().count("changed while snapshotting")
        print(f"rewrites: 16 contents, {len(versions)} versions, {retries} snapshot retries")
        check_pulls_back(d, short_tmp / "out", written)
        assert d.client().status()["queue"]["failed"] == 0
