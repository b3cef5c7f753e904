"""From the demo to production: a daemon versions checkpoints on the local default storage
with no Git remote; the config then moves to S3 (moto) and a bare Git remote. The daemon
refuses to start on it and says what to do; ``cpvd migrate-storage`` (killed once midway,
then run again) copies everything; the daemon then starts, pushes the whole history, and
every old version comes back byte for byte with the real ``dvc pull`` in a fresh clone,
with the old local storage gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, git, tags, wait_for

DVC = str(Path(sys.executable).with_name("dvc"))
ART = "demo/model"
MIB = 1024 * 1024


def checkpoints() -> dict[str, bytes | dict[str, bytes]]:
    """Enough objects that a kill lands midway: two files (one multipart) and a Hugging
    Face checkpoint directory of a dozen shards."""
    shards: dict[str, bytes] = {f"shard-{i:02d}.bin": os.urandom(MIB // 2) for i in range(12)}
    shards["trainer_state.json"] = json.dumps({"global_step": 3}).encode()
    return {
        "epoch-1.bin": os.urandom(300_000),
        "epoch-2.bin": os.urandom(18 * MIB + 5),
        "checkpoint-3": shards,
    }


def place(staging: Path, ck: Path, name: str, data: bytes | dict[str, bytes]) -> None:
    """Write the checkpoint aside, then rename it in whole (as Lightning and HF do)."""
    src = staging / name
    if isinstance(data, bytes):
        src.write_bytes(data)
    else:
        for rel, blob in data.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(blob)
    os.rename(src, ck / name)


def cpvd(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpvd", *args], capture_output=True, text=True, timeout=600,
        **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def migrate_killed_after_first_copy(config: Path, to: str) -> str:
    """Run migrate-storage and ``kill -9`` its process group once an object has landed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpvd", "migrate-storage", "--config", str(config), "--to", to],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if ": copied " in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def test_demo_to_s3_and_a_remote_refused_then_migrated_then_every_version_pulls(
    short_tmp: Path,
    bare_remote: Path,
    moto_server: str,
    s3_bucket: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    ck, staging = short_tmp / "ck", short_tmp / "staging"
    staging.mkdir()
    payloads = checkpoints()
    d = daemon_factory(watches=[Watch(ck, ART, settle_seconds=0.2)])
    local_storage = d.root / "storage"
    with d:  # the demo: local default storage, no remote
        for name, data in payloads.items():
            place(staging, ck, name, data)
            n = len(tags(d.registry)) + 1
            wait_for(lambda n=n: len(tags(d.registry)) == n, timeout=60, what=f"version {n}")
    old_tags = tags(d.registry)
    dvc_config_before = git(d.registry, "show", "HEAD:.dvc/config")

    # production: S3 and a Git remote
    s3_url = f"s3://{s3_bucket}/ckpt"
    d.storage_url, d.endpoint_url, d.remote = s3_url, moto_server, bare_remote
    d.start(wait=False)
    assert d.proc is not None
    rc = d.proc.wait(60)
    d.proc = None
    assert rc != 0, d.log()
    assert f"cpvd migrate-storage --to {s3_url}" in d.log()
    assert git(d.registry, "show", "HEAD:.dvc/config") == dvc_config_before
    check = cpvd("check", "--config", str(d.config_path))
    assert check.returncode == 1 and "cpvd migrate-storage" in check.stdout, check.stdout

    first = migrate_killed_after_first_copy(d.config_path, s3_url)
    assert git(d.registry, "show", "HEAD:.dvc/config") == dvc_config_before, first
    done = cpvd("migrate-storage", "--config", str(d.config_path), "--to", s3_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already there, verified" in done.stdout, done.stdout  # resumed, not restarted
    assert ": copied " in done.stdout and "switched the registry's storage" in done.stdout

    os.rename(local_storage, short_tmp / "old-storage-gone")  # S3 alone must serve them
    with d:
        wait_for(lambda: remote_main(bare_remote) == git(d.registry, "rev-parse", "HEAD"),
                 timeout=60, what="the history pushed")  # fmt: skip
        wait_for(lambda: tags(bare_remote) == old_tags, timeout=60, what="every tag pushed")
        assert check_passes(d)

    clone = short_tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(bare_remote), str(clone)], check=True)
    assert (clone / ".cpv" / "storage.json").exists()
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server}
    # old commits name the old storage in .dvc/config: point this clone at the new one
    for key, value in (("url", s3_url), ("endpointurl", moto_server)):
        subprocess.run([DVC, "remote", "modify", "--local", "storage", key, value],
                       cwd=clone, env=env, check=True)  # fmt: skip
    out = clone / f"artifacts/{ART}/checkpoint"
    for tag, name in zip(old_tags, payloads, strict=True):
        subprocess.run(["git", "checkout", "-q", tag], cwd=clone, check=True)
        res = subprocess.run([DVC, "pull", "-j", "1", "-f"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        want = payloads[name]
        if isinstance(want, bytes):
            assert out.read_bytes() == want, tag
        else:
            assert {p.name: p.read_bytes() for p in out.iterdir()} == want, tag


def remote_main(remote: Path) -> str | None:
    res = subprocess.run(["git", "rev-parse", "-q", "--verify", "main"], cwd=remote,
                         capture_output=True, text=True)  # fmt: skip
    return res.stdout or None


def check_passes(d: DaemonProcess) -> bool:
    res = cpvd("check", "--config", str(d.config_path))
    assert res.returncode == 0, res.stdout + res.stderr
    return True
