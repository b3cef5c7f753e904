"""One registry, one storage, on purpose: the registry records its storage, another one is
refused with guidance, ``migrate-storage`` copies, verifies, resumes and switches, and a Git
remote added later is set up (or refused when its history is unrelated). Real git, real
local storages, a bare remote, the real ``dvc pull``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cpvd.cli import main
from cpvd.config.model import Config, RegistryConfig, StorageConfig
from cpvd.errors import ConfigError, GitError, StateError
from cpvd.registry.binding import RECORD, recorded_storage
from cpvd.registry.model import VersionRequest
from cpvd.registry.preflight import prepare_registry, registry_problems
from cpvd.registry.repo import RegistryRepo
from cpvd.service.instance import InstanceLock
from cpvd.setup.check import check_registry
from cpvd.setup.migrate import MigrationIncomplete, migrate_storage
from cpvd.startup import open_registry, open_state
from cpvd.storage import open_storage
from cpvd.storage.base import object_key
from tests.integration.engine_helpers import dvc, make_config, make_engine, version_checkpoint

ART = "team/model"


def settings(cfg: Config) -> dict[str, str]:
    return open_storage(cfg.storage).dvc_remote_settings()


def with_storage(cfg: Config, url: str) -> Config:
    return replace(cfg, storage=StorageConfig(url=url))


def make_versions(cfg: Config, work: Path) -> dict[str, bytes | dict[str, bytes]]:
    """Three versions of ART (two files, one directory) in cfg's registry and storage."""
    payloads: dict[str, bytes | dict[str, bytes]] = {
        "a.pt": os.urandom(3000),
        "b.pt": os.urandom(5000),
        "ck-3": {"model.bin": os.urandom(4000), "cfg/x.json": b"{}", "same.bin": b"{}"},
    }
    engine = make_engine(cfg)
    try:
        for i, (name, data) in enumerate(payloads.items()):
            p = work / name
            if isinstance(data, bytes):
                p.write_bytes(data)
            else:
                for rel, blob in data.items():
                    (p / rel).parent.mkdir(parents=True, exist_ok=True)
                    (p / rel).write_bytes(blob)
            req = VersionRequest(artifact=ART, path=p, source=str(p), kind="model", job_id=f"j{i}")
            version_checkpoint(engine, req)
    finally:
        engine.storage.close()
    return payloads


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def demo(short_tmp: Path) -> tuple[Config, dict[str, bytes | dict[str, bytes]]]:
    work = short_tmp / "work"
    work.mkdir()
    cfg = make_config(short_tmp, str(short_tmp / "store-a"))
    return cfg, make_versions(cfg, work)


def test_the_registry_records_its_storage(demo: tuple[Config, dict]) -> None:
    cfg, _ = demo
    record = json.loads(git(cfg.registry.path, "show", f"HEAD:{RECORD}"))
    assert record["url"] == cfg.storage.url
    assert recorded_storage(cfg.registry.path).url == cfg.storage.url  # type: ignore[union-attr]


def test_another_storage_is_refused_with_guidance_and_nothing_rewritten(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, _ = demo
    other = with_storage(cfg, str(short_tmp / "store-b"))
    before = git(cfg.registry.path, "rev-parse", "HEAD")
    with pytest.raises(ConfigError) as err:
        prepare_registry(other, settings(other))
    msg = err.value.message
    assert f"cpvd migrate-storage --to {short_tmp / 'store-b'}" in msg
    assert f'[storage] url = "{cfg.storage.url}"' in msg
    assert "3 versions" in msg
    # the same answer from `cpvd check`
    result = check_registry(other)
    assert not result.ok and "migrate-storage" in result.detail
    assert git(cfg.registry.path, "rev-parse", "HEAD") == before
    assert str(short_tmp / "store-a") in git(cfg.registry.path, "show", "HEAD:.dvc/config")


def test_a_registry_made_before_the_record_is_bound_by_its_dvc_config(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, _ = demo
    reg = cfg.registry.path
    git(reg, "rm", "-q", RECORD)
    git(reg, "commit", "-q", "-m", "as an older cpvd left it")
    other = with_storage(cfg, str(short_tmp / "store-b"))
    assert registry_problems(other, settings(other))
    assert not registry_problems(cfg, settings(cfg))


def test_a_registry_without_versions_may_change_storage(short_tmp: Path) -> None:
    cfg = make_config(short_tmp, str(short_tmp / "store-a"))
    make_engine(cfg).storage.close()
    other = with_storage(cfg, str(short_tmp / "store-b"))
    assert registry_problems(other, settings(other)) == []
    make_engine(other).storage.close()
    assert recorded_storage(cfg.registry.path).url == str(short_tmp / "store-b")  # type: ignore[union-attr]


def test_migrate_local_to_local_copies_verifies_switches_and_dvc_pulls(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, payloads = demo
    new_url = str(short_tmp / "store-b")
    moved = with_storage(cfg, new_url)
    out = io.StringIO()
    assert migrate_storage(moved, new_url, None, False, out) == 0
    text = out.getvalue()
    # 2 files + 2 distinct directory files ("same.bin" equals "cfg/x.json") + 1 manifest
    assert "5 objects" in text and "done: 5 copied" in text, text
    assert registry_problems(moved, settings(moved)) == []
    assert registry_problems(cfg, settings(cfg))  # the old storage is now the wrong one
    assert "cpv: storage moved" in git(cfg.registry.path, "log", "-1", "--format=%s")
    # every version pulls back byte-identical from the new storage alone
    os.rename(short_tmp / "store-a", short_tmp / "store-a-gone")
    clone = short_tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(cfg.registry.path), str(clone)], check=True)
    out_path = clone / f"artifacts/{ART}/checkpoint"
    pointer = f"artifacts/{ART}/checkpoint.dvc"
    for tag, name in zip(sorted(git(clone, "tag", "-l", "*@v*").split()), payloads, strict=True):
        # an old commit's .dvc/config names the old storage: take only its pointer
        git(clone, "checkout", "-q", tag, "--", pointer)
        dvc("pull", "-f", cwd=clone)
        want = payloads[name]
        if isinstance(want, bytes):
            assert out_path.read_bytes() == want
        else:
            for rel, blob in want.items():
                assert (out_path / rel).read_bytes() == blob
    # a second run finds nothing to do
    out2 = io.StringIO()
    migrate_storage(moved, new_url, None, False, out2)
    assert "nothing to copy" in out2.getvalue()


def test_an_interrupted_migration_resumes_and_verifies_what_it_finds(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, _ = demo
    new_url = str(short_tmp / "store-b")
    moved = with_storage(cfg, new_url)

    class Killed(BaseException):
        pass

    class DiesAfterTwoCopies(io.StringIO):
        copied = 0

        def write(self, s: str) -> int:
            if "copied" in s:
                self.copied += 1
                if self.copied == 2:
                    raise Killed
            return super().write(s)

    head = git(cfg.registry.path, "rev-parse", "HEAD")
    with pytest.raises(Killed):
        migrate_storage(moved, new_url, None, False, DiesAfterTwoCopies())
    assert git(cfg.registry.path, "rev-parse", "HEAD") == head  # nothing switched yet
    # as if a kill came between an object landing and its journal line: the rerun
    # verifies that one before it skips it
    [manifest] = (short_tmp / "store-a" / "files").rglob("*.dir")
    landed = Path(new_url) / manifest.relative_to(short_tmp / "store-a")
    landed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest, landed)
    out = io.StringIO()
    migrate_storage(moved, new_url, None, False, out)
    text = out.getvalue()
    assert text.count("already there, verified earlier") == 2, text
    assert text.count("already there, verified now") == 1, text
    assert "done: 2 copied" in text, text
    assert registry_problems(moved, settings(moved)) == []


def test_a_corrupt_object_already_in_the_target_stops_the_migration(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, _ = demo
    new_url = str(short_tmp / "store-b")
    moved = with_storage(cfg, new_url)
    old = open_storage(cfg.storage)
    victim = next(p for p in (short_tmp / "store-a" / "files").rglob("*[0-9a-f]") if p.is_file())
    md5 = victim.parent.name + victim.name
    bad = Path(new_url) / object_key(md5)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x" * victim.stat().st_size)
    with pytest.raises(Exception, match="does not match its md5"):
        migrate_storage(moved, new_url, None, False, io.StringIO())
    assert old.verify(md5)
    assert registry_problems(cfg, settings(cfg)) == []  # still bound to the old storage


def test_objects_missing_from_the_old_storage_refuse_the_switch(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, _ = demo
    next(p for p in (short_tmp / "store-a" / "files").rglob("*") if p.is_file()).unlink()
    new_url = str(short_tmp / "store-b")
    moved = with_storage(cfg, new_url)
    with pytest.raises(MigrationIncomplete, match="--allow-missing"):
        migrate_storage(moved, new_url, None, False, io.StringIO())
    assert registry_problems(cfg, settings(cfg)) == []
    assert migrate_storage(moved, new_url, None, True, io.StringIO()) == 0
    assert registry_problems(moved, settings(moved)) == []


def test_cpvd_migrate_storage_command(demo: tuple[Config, dict], short_tmp: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    cfg, _ = demo
    conf = short_tmp / "cpvd.toml"
    conf.write_text(
        f'[daemon]\nstate_dir = "{cfg.daemon.state_dir}"\n'
        f'[registry]\npath = "{cfg.registry.path}"\n'
        f'[storage]\nurl = "{cfg.storage.url}"\n'
    )
    assert main(["check", "--config", str(conf)]) == 0
    new_url = str(short_tmp / "store-b")
    assert main(["migrate-storage", "--config", str(conf), "--to", new_url]) == 0
    out = capsys.readouterr().out
    assert "done: 5 copied" in out and f'now set [storage] url = "{new_url}"' in out
    assert main(["check", "--config", str(conf)]) == 1
    assert "cpvd migrate-storage" in capsys.readouterr().out


# ---------------------------------------------------------------- a remote added later


def test_adding_an_empty_remote_sets_it_up_and_pushes_the_history(
    demo: tuple[Config, dict], bare_remote: Path
) -> None:
    cfg, _ = demo
    with_remote = replace(cfg, registry=replace(cfg.registry, remote=str(bare_remote)))
    assert check_registry(with_remote).ok
    prepare_registry(with_remote, settings(with_remote))
    engine = make_engine(with_remote)
    try:
        engine.push()
    finally:
        engine.storage.close()
    assert git(bare_remote, "rev-parse", "main") == git(cfg.registry.path, "rev-parse", "HEAD")
    assert len(git(bare_remote, "tag", "-l", "*@v*").split()) == 3


def test_a_remote_with_unrelated_history_is_refused(
    demo: tuple[Config, dict], bare_remote: Path, short_tmp: Path
) -> None:
    cfg, _ = demo
    other = short_tmp / "other"
    subprocess.run(["git", "init", "-q", "-b", "main", str(other)], check=True)
    (other / "x").write_text("someone else's registry\n")
    git(other, "add", "x")
    git(other, "commit", "-q", "-m", "theirs")
    git(other, "push", "-q", str(bare_remote), "main")
    with_remote = replace(cfg, registry=RegistryConfig(path=cfg.registry.path,
                                                       remote=str(bare_remote)))  # fmt: skip
    with pytest.raises(ConfigError, match="unrelated to the registry"):
        prepare_registry(with_remote, settings(with_remote))
    result = check_registry(with_remote)
    assert not result.ok and "unrelated" in result.detail
    assert git(cfg.registry.path, "remote").strip() == ""  # nothing was set up


def test_a_daemon_on_the_old_storage_never_writes_it_back_after_a_migration(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    """Another machine migrated the registry; this one, still on the old storage, lays out
    a new artifact (as after a fetch): the switch stays, the artifact is registered."""
    cfg, _ = demo
    new_url = str(short_tmp / "store-b")
    migrate_storage(with_storage(cfg, new_url), new_url, None, False, io.StringIO())
    reg = cfg.registry.path
    assert git(reg, "log", "-1", "--format=%(trailers:key=Cpv-Action,valueonly)").strip() == (
        "storage"
    )
    stale = RegistryRepo(cfg.registry, settings(cfg))
    assert stale.ensure_layout({"team/other": "model"}, message="cpv: register artifact")
    assert "team/other" in git(reg, "show", "HEAD:dvc.yaml")
    assert new_url in git(reg, "show", "HEAD:.dvc/config")
    assert recorded_storage(reg).url == new_url  # type: ignore[union-attr]


def test_a_fresh_clone_whose_registry_records_another_storage_is_refused(
    demo: tuple[Config, dict], bare_remote: Path, short_tmp: Path
) -> None:
    """A second machine configured with another storage clones the team's registry: its
    start is refused before it versions anything into a storage the registry does not use."""
    cfg, _ = demo
    git(cfg.registry.path, "push", "-q", "--follow-tags", str(bare_remote), "main")
    other = make_config(short_tmp, str(short_tmp / "store-b"), remote=bare_remote, name="m2")
    _db, _queue, ledger = open_state(other.daemon.state_dir, 60.0, rebuild=False)
    try:
        with pytest.raises(ConfigError, match="cpvd migrate-storage"):
            open_registry(other, other.daemon.state_dir, ledger)
    finally:
        _db.close()
    assert str(short_tmp / "store-a") in git(other.registry.path, "show", "HEAD:.dvc/config")


def test_migrate_to_s3_and_back_to_a_directory(
    demo: tuple[Config, dict], short_tmp: Path, moto_server: str, s3_bucket: str
) -> None:
    """local -> S3 (uploads), then S3 -> local (streamed downloads, md5-checked)."""
    cfg, _ = demo
    s3_url = f"s3://{s3_bucket}/reg"
    on_s3 = replace(cfg, storage=StorageConfig(url=s3_url, endpoint_url=moto_server,
                                               region="us-east-1"))  # fmt: skip
    out = io.StringIO()
    migrate_storage(on_s3, s3_url, None, False, out)
    assert "done: 5 copied" in out.getvalue(), out.getvalue()
    assert registry_problems(on_s3, settings(on_s3)) == []
    record = json.loads(git(cfg.registry.path, "show", f"HEAD:{RECORD}"))
    assert record == {**record, "url": s3_url, "endpoint_url": moto_server}
    back_url = str(short_tmp / "store-c")
    back = with_storage(cfg, back_url)
    out = io.StringIO()
    migrate_storage(back, back_url, None, False, out)
    assert "done: 5 copied" in out.getvalue(), out.getvalue()
    local = open_storage(back.storage)
    objects = [p for p in Path(back_url, "files").rglob("*") if p.is_file()]
    assert len(objects) == 5
    assert all(local.verify(p.parent.name + p.name) for p in objects)
    assert registry_problems(back, settings(back)) == []


def test_migration_refuses_while_the_daemon_runs(
    demo: tuple[Config, dict], short_tmp: Path
) -> None:
    cfg, _ = demo
    new_url = str(short_tmp / "store-b")
    with InstanceLock(cfg.daemon.state_dir), pytest.raises(StateError, match="stop it first"):
        migrate_storage(with_storage(cfg, new_url), new_url, None, False, io.StringIO())
    assert not Path(new_url).exists()


@pytest.mark.parametrize(
    "record",
    ['{"url": "../../elsewhere"}', "not json", '["s3://x"]', '{"url": "s3://ok\\u0000"}'],
)
def test_a_malformed_record_falls_back_to_the_dvc_config(
    demo: tuple[Config, dict], record: str
) -> None:
    """The record comes from a repository others push to: a bad one is not believed."""
    cfg, _ = demo
    reg = cfg.registry.path
    (reg / RECORD).write_text(record)
    git(reg, "commit", "-q", "-am", "hostile record")
    assert recorded_storage(reg).url == cfg.storage.url  # type: ignore[union-attr]
    assert registry_problems(cfg, settings(cfg)) == []


def test_a_push_into_an_unrelated_history_is_never_replayed_onto_it(
    demo: tuple[Config, dict], bare_remote: Path, short_tmp: Path
) -> None:
    """Were the remote swapped behind cpvd's back (or unreachable when it was checked), a
    rejected push must not reset the registry onto the other history and renumber."""
    cfg, _ = demo
    other = short_tmp / "other"
    subprocess.run(["git", "init", "-q", "-b", "main", str(other)], check=True)
    (other / "x").write_text("someone else's registry\n")
    git(other, "add", "x")
    git(other, "commit", "-q", "-m", "theirs")
    git(other, "push", "-q", str(bare_remote), "main")
    reg = cfg.registry.path
    git(reg, "remote", "add", "origin", str(bare_remote))
    head, tags = git(reg, "rev-parse", "HEAD"), git(reg, "tag", "-l")
    with_remote = replace(cfg, registry=replace(cfg.registry, remote=str(bare_remote)))
    engine = make_engine(with_remote)
    try:
        with pytest.raises(GitError, match="unrelated"):
            engine.push()
    finally:
        engine.storage.close()
    assert git(reg, "rev-parse", "HEAD") == head and git(reg, "tag", "-l") == tags
    assert git(bare_remote, "log", "--format=%s", "main").strip() == "theirs"
