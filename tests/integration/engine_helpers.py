"""Builders for engines on real git, real storage (local dir or moto S3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cpvd.config.model import Config, DaemonConfig, RegistryConfig, StorageConfig, WatchConfig
from cpvd.registry.engine import Engine
from cpvd.registry.model import VersionRequest, VersionResult
from cpvd.registry.repo import RegistryRepo
from cpvd.storage import open_storage
from cpvd.storage.hashing import hash_checkpoint

BIN = Path(sys.executable).parent


def make_config(
    root: Path,
    storage_url: str,
    *,
    endpoint: str | None = None,
    remote: Path | None = None,
    watches: tuple[WatchConfig, ...] = (),
    name: str = "m1",
) -> Config:
    return Config(
        daemon=DaemonConfig(socket=root / name / "s.sock", state_dir=root / name / "state"),
        registry=RegistryConfig(
            path=root / name / "registry", remote=str(remote) if remote else None
        ),
        storage=StorageConfig(
            url=storage_url, endpoint_url=endpoint, region="us-east-1" if endpoint else None
        ),
        watches=watches,
    )


def make_engine(cfg: Config) -> Engine:
    storage = open_storage(cfg.storage)
    registry = RegistryRepo(cfg.registry, storage.dvc_remote_settings())
    engine = Engine(cfg, storage, registry)
    engine.open()
    return engine


def version_checkpoint(engine: Engine, req: VersionRequest) -> VersionResult:
    """Version a checkpoint the way the daemon's worker does: hash, upload, commit and tag,
    then push (the daemon's pusher does that moments later, batched)."""
    content = hash_checkpoint(req.path)
    engine.upload(req.path, content)
    result = engine.version(req, content, resume=True)
    if engine.registry.has_remote:
        engine.push()
        # a push that lost a race renumbers: report the version as it ended up
        result.info = engine.index().find_job(req.job_id) or result.info
    return result


def restore(engine: Engine, artifact: str, version: str, out_dir: Path) -> Path:
    """Write a version to ``out_dir/<name>`` through the engine's verified download (the
    revert path); ``out_dir`` must be inside a watched directory."""
    [reverted] = engine.revert(artifact, version, to=out_dir)
    return Path(reverted.path)


def run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{argv} failed: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dvc(*args: str, cwd: Path, endpoint: str | None = None) -> str:
    env = {"AWS_ENDPOINT_URL": endpoint} if endpoint else {}
    return run([str(BIN / "dvc"), *args], cwd=cwd, env=env)


def tree_bytes(path: Path) -> dict[str, bytes]:
    """A file or directory as {relpath: bytes}, for byte-identical comparisons."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
