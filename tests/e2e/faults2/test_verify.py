"""Case 12: ``cpvctl verify`` re-hashes the stored objects that version tags reference.

A corrupted object and a deleted one in the local DVC remote must both be reported by name
(tag and object id) through the real ``python -m cpvctl verify --json`` and exit code 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.faults2.helpers import idle
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "team/verify"


def cpvctl(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpvctl", "--socket", str(d.socket), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def object_path(storage: Path, md5: str) -> Path:
    return storage / "files" / "md5" / md5[:2] / md5[2:]


def verify_json(d: DaemonProcess, *args: str) -> tuple[int, dict[str, Any]]:
    out = cpvctl(d, "verify", "--json", *args)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_verify_reports_corrupt_and_missing_objects_by_name(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)])
    storage = d.root / "storage"
    with d:
        (ck / "a.bin").write_bytes(b"A" * 40_000)
        wait_for(lambda: len(d.client().versions(ARTIFACT)) == 1, what="v1")
        (ck / "b.bin").write_bytes(b"B" * 30_000)
        wait_for(lambda: len(d.client().versions(ARTIFACT)) == 2, what="v2")
        run = ck / "checkpoint-3"
        run.mkdir()
        (run / "model.bin").write_bytes(b"M" * 20_000)
        (run / "optimizer.bin").write_bytes(b"O" * 10_000)
        (run / "trainer_state.json").write_text('{"step": 3}')
        wait_for(lambda: len(d.client().versions(ARTIFACT)) == 3, what="v3")
        wait_for(lambda: idle(d), what="idle")
        by_version = {v["version"]: v for v in d.client().versions(ARTIFACT)}
        v_a, v_b, v_dir = by_version["v1.0.0"], by_version["v1.1.0"], by_version["v1.2.0"]
        assert v_dir["is_dir"] is True

        rc, clean = verify_json(d)
        assert rc == 0, clean
        assert clean["missing"] == [] and clean["corrupt"] == []
        assert clean["checked"] == 2 + 3  # two files + three files of the directory

        # corrupt a's object (same size: only a re-hash notices), delete b's object, and
        # delete one file of the directory version
        a_obj = object_path(storage, v_a["md5"])
        a_obj.chmod(0o644)
        a_obj.write_bytes(b"X" * 40_000)
        object_path(storage, v_b["md5"]).unlink()
        manifest = d.client().request(
            "GET", "/pull/manifest", {"artifact": ARTIFACT, "version": "v1.2.0"}
        )
        opt = next(f for f in manifest["files"] if f["relpath"] == "optimizer.bin")
        object_path(storage, opt["md5"]).unlink()

        out = cpvctl(d, "verify", "--json")
        assert out.returncode == 1, (out.stdout, out.stderr)
        report = json.loads(out.stdout)
        corrupt = {(i["tag"], i["object"]) for i in report["corrupt"]}
        missing = {(i["tag"], i["object"], i.get("relpath")) for i in report["missing"]}
        assert corrupt == {(v_a["tag"], v_a["md5"])}
        assert missing == {
            (v_b["tag"], v_b["md5"], "b.bin"),
            (v_dir["tag"], opt["md5"], "optimizer.bin"),
        }
        # the human form names them too, and also exits 1
        human = cpvctl(d, "verify")
        assert human.returncode == 1
        for name in (v_a["tag"], v_b["tag"], f"{v_dir['tag']}:optimizer.bin"):
            assert name in human.stdout, human.stdout

        # --sample N checks N versions
        rc, sampled = verify_json(d, "--sample", "1")
        assert sampled["versions"] == 1
        rc, sampled = verify_json(d, "--sample", "2", "--artifact", ARTIFACT)
        assert sampled["versions"] == 2
        rc, everything = verify_json(d, "--sample", "50")
        assert rc == 1 and everything["versions"] == 3
        # a corrupted directory manifest is reported as corrupt, with the manifest's id
        object_path(storage, v_dir["md5"]).write_bytes(b"[]")
        rc, report = verify_json(d)
        assert rc == 1
        assert (v_dir["tag"], v_dir["md5"]) in {(i["tag"], i["object"]) for i in report["corrupt"]}
