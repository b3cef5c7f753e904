"""The engine through real git, the real dvc/gto CLIs, and both storage kinds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cpvctl.protocol import ProtocolError
from cpvd.config.model import WatchConfig
from cpvd.errors import CpvError, InputError, NotFound
from cpvd.registry.engine import Engine, VersionRequest
from tests.integration.engine_helpers import (
    BIN,
    dvc,
    make_config,
    make_engine,
    restore,
    run,
    tree_bytes,
    version_checkpoint,
    write,
)


def git_clean(repo: Path) -> bool:
    return run(["git", "status", "--porcelain"], cwd=repo).strip() == ""


def test_versions_round_trip_through_fresh_clone_and_dvc_pull(
    short_tmp: Path, bare_remote: Path, storage: tuple[str, str | None]
) -> None:
    url, endpoint = storage
    work = short_tmp / "work"
    cfg = make_config(
        short_tmp,
        url,
        endpoint=endpoint,
        remote=bare_remote,
        watches=(WatchConfig(path=work, artifact="vision/resnet50"),),
    )
    engine = make_engine(cfg)
    f1 = write(work / "epoch-1.pt", os.urandom(300_000))
    r1 = version_checkpoint(engine, VersionRequest("vision/resnet50", f1))
    assert (r1.status, r1.info.version) == ("versioned", "v1.0.0")
    ckdir = work / "checkpoint-500"
    write(ckdir / "model.safetensors", os.urandom(5000))
    write(ckdir / "sub" / "optimizer.pt", b"optim")
    write(ckdir / "empty.txt", b"")
    r2 = version_checkpoint(engine, VersionRequest("vision/resnet50", ckdir))
    assert r2.info.version == "v1.1.0" and r2.info.is_dir and r2.info.nfiles == 3
    assert r2.info.parent == "v1.0.0"
    # same bytes as the current version: no new version
    again = version_checkpoint(engine, VersionRequest("vision/resnet50", ckdir))
    assert again.status == "unchanged" and again.info.version == "v1.1.0"
    r3 = version_checkpoint(
        engine, VersionRequest("vision/resnet50", write(work / "e3.pt", b"three"), bump="major")
    )
    assert r3.info.version == "v2.0.0"
    assert git_clean(cfg.registry.path)

    clone = short_tmp / "clone"
    run(["git", "clone", "-q", str(bare_remote), str(clone)])
    tags = run(["git", "tag", "-l"], cwd=clone).split()
    assert sorted(tags) == [
        "vision/resnet50@v1.0.0",
        "vision/resnet50@v1.1.0",
        "vision/resnet50@v2.0.0",
    ]
    out = clone / "artifacts" / "vision" / "resnet50" / "checkpoint"
    for tag, original in (("vision/resnet50@v1.0.0", f1), ("vision/resnet50@v1.1.0", ckdir)):
        run(["git", "checkout", "-q", tag], cwd=clone)
        dvc("pull", "-q", "-j", "1", cwd=clone, endpoint=endpoint)
        assert tree_bytes(out) == tree_bytes(original), tag
    msg = json.loads(
        run(["git", "tag", "-l", "--format=%(contents)", "vision/resnet50@v1.1.0"], cwd=clone)
    )
    assert msg["md5"] == r2.info.md5 and msg["nfiles"] == 3 and msg["parent"] == "v1.0.0"
    assert msg["name"] == "checkpoint-500" and msg["host"] and msg["created_at"]

    # dvc artifacts get, by tag revision
    got = short_tmp / "got"
    got.mkdir()
    dvc(
        "artifacts",
        "get",
        str(bare_remote),
        "vision/resnet50",
        "--rev",
        "v1.0.0",
        "-o",
        str(got / "v1"),
        "-j",
        "1",
        cwd=got,
        endpoint=endpoint,
    )
    assert (got / "v1").read_bytes() == f1.read_bytes()


def test_gto_show_lists_versions_and_stages(short_tmp: Path) -> None:
    cfg = make_config(short_tmp, str(short_tmp / "storage"))
    engine = make_engine(cfg)
    src = short_tmp / "src"
    for i in range(3):
        version_checkpoint(
            engine, VersionRequest("team/model", write(src / f"e{i}.pt", f"x{i}".encode()))
        )
    engine.promote("team/model", "v1.1", "prod")
    engine.promote("team/model", "v1.2.0", "best")
    out = run([str(BIN / "gto"), "show", "team/model", "--json"], cwd=cfg.registry.path)
    shown = json.loads(out)
    versions = {v["version"]: v for v in shown}
    assert set(versions) == {"v1.0.0", "v1.1.0", "v1.2.0"}
    assert [s["stage"] for s in versions["v1.1.0"]["stages"]] == ["prod"]
    listed = engine.versions("team/model")
    assert [v.version for v in listed] == ["v1.2.0", "v1.1.0", "v1.0.0"]
    assert listed[1].stages == ["prod"] and listed[0].stages == ["best"]


def test_metrics_sidecar_and_lineage_promote_revert_with_data(
    short_tmp: Path, bare_remote: Path
) -> None:
    from cpvd.watch.sidecar import read_metrics

    work = short_tmp / "w"
    cfg = make_config(
        short_tmp,
        str(short_tmp / "storage"),
        remote=bare_remote,
        watches=(
            WatchConfig(path=work / "model", artifact="vision/m", data=("vision/d",)),
            WatchConfig(path=work / "data", artifact="vision/d", kind="data"),
        ),
    )
    engine = make_engine(cfg)
    d1 = write(work / "data" / "shard-1.bin", b"data one")
    version_checkpoint(engine, VersionRequest("vision/d", d1, kind="data"))
    m1 = write(work / "model" / "e1.pt", b"model one")
    write(work / "model" / "e1.pt.metrics.json", json.dumps({"loss": 0.5, "acc": 0.9}).encode())
    r = version_checkpoint(
        engine, VersionRequest("vision/m", m1, metrics=read_metrics(m1), data=("vision/d",))
    )
    assert r.info.metrics == {"loss": 0.5, "acc": 0.9}
    assert r.info.lineage == {"vision/d": "v1.0.0"}
    d2 = write(work / "data" / "shard-2.bin", b"data two")
    version_checkpoint(engine, VersionRequest("vision/d", d2, kind="data"))
    write(work / "model" / "e2.pt", b"model two")
    version_checkpoint(
        engine, VersionRequest("vision/m", work / "model" / "e2.pt", data=("vision/d",))
    )

    promoted = engine.promote("vision/m", "v1.0.0", "prod", with_data=True)
    assert {(p["artifact"], p["version"]) for p in promoted} == {
        ("vision/m", "v1.0.0"),
        ("vision/d", "v1.0.0"),
    }
    remote_tags = run(["git", "ls-remote", "--tags", str(bare_remote)])
    assert "vision/m#prod#1" in remote_tags and "vision/d#prod#1" in remote_tags

    # the model file was deleted by the trainer; the data dir got a foreign file at v1's name
    m1.unlink()
    d1.write_bytes(b"someone's edit")
    reverted = engine.revert("vision/m", "v1.0", with_data=True)
    assert m1.read_bytes() == b"model one"
    assert d1.read_bytes() == b"data one"
    backups = [r.backup for r in reverted if r.backup]
    assert len(backups) == 1 and Path(backups[0]).read_bytes() == b"someone's edit"
    assert str(cfg.daemon.state_dir) in backups[0]
    assert engine.current_version("vision/m") == "v1.0.0"
    assert engine.current_version("vision/d") == "v1.0.0"
    # the next checkpoint continues the numbering with parent = the reverted-to version
    r3 = version_checkpoint(
        engine, VersionRequest("vision/m", write(work / "model" / "e3.pt", b"m3"))
    )
    assert r3.info.version == "v1.2.0" and r3.info.parent == "v1.0.0"
    assert git_clean(cfg.registry.path)
    assert run(["git", "rev-parse", "main"], cwd=bare_remote) == run(
        ["git", "rev-parse", "HEAD"], cwd=cfg.registry.path
    )


def test_revert_refuses_targets_outside_watches_and_changes_nothing(short_tmp: Path) -> None:
    work = short_tmp / "w"
    cfg = make_config(
        short_tmp, str(short_tmp / "storage"), watches=(WatchConfig(path=work, artifact="a/b"),)
    )
    engine = make_engine(cfg)
    version_checkpoint(engine, VersionRequest("a/b", write(work / "x.pt", b"x")))
    version_checkpoint(engine, VersionRequest("a/b", write(work / "y.pt", b"y")))
    head = run(["git", "rev-parse", "HEAD"], cwd=cfg.registry.path)
    with pytest.raises(InputError) as err:
        engine.revert("a/b", "v1.0.0", to=short_tmp / "elsewhere")
    assert err.value.code == "path_outside_watch"
    assert run(["git", "rev-parse", "HEAD"], cwd=cfg.registry.path) == head
    assert not (short_tmp / "elsewhere").exists()


def test_pull_writes_verified_bytes_and_never_a_partial_file(short_tmp: Path) -> None:
    # restored through the engine's verified download (the revert path), into watched dirs
    cfg = make_config(
        short_tmp,
        str(short_tmp / "storage"),
        watches=(
            WatchConfig(path=short_tmp / "out", artifact="t/m"),
            WatchConfig(path=short_tmp / "out2", artifact="t/m"),
        ),
    )
    engine = make_engine(cfg)
    d = short_tmp / "src" / "ck"
    write(d / "a.bin", os.urandom(1000))
    write(d / "b" / "c.bin", b"c")
    info = version_checkpoint(engine, VersionRequest("t/m", d)).info
    out = restore(engine, "t/m", "v1.0.0", short_tmp / "out")
    assert out == short_tmp / "out" / "ck" and tree_bytes(out) == tree_bytes(d)
    # corrupt the stored object of a.bin: the pull fails and leaves nothing behind
    entry = next(e for e in engine.manifest("t/m", info.version).files if e.relpath == "a.bin")
    obj = Path(cfg.storage.url) / "files" / "md5" / entry.md5[:2] / entry.md5[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"garbage")
    with pytest.raises(CpvError):
        restore(engine, "t/m", "v1.0.0", short_tmp / "out2")
    assert list((short_tmp / "out2").iterdir()) == []
    report = engine.verify_objects(engine.verify_targets())
    assert [c["relpath"] for c in report["corrupt"]] == ["a.bin"]


def test_manifest_of_a_directory_version_gives_each_file_its_size(
    short_tmp: Path, storage: tuple[str, str | None]
) -> None:
    """DVC's ``.dir`` object holds no sizes; the manifest (what cpvctl pull trusts for
    Content-Length and its size check) must still give the real ones."""
    url, endpoint = storage
    engine = make_engine(make_config(short_tmp, url, endpoint=endpoint))
    d = short_tmp / "src" / "ck"
    write(d / "a.bin", os.urandom(1000))
    write(d / "b" / "c.bin", b"c" * 7)
    info = version_checkpoint(engine, VersionRequest("t/m", d)).info
    files = {e.relpath: e.size for e in engine.manifest("t/m", info.version).files}
    assert files == {"a.bin": 1000, "b/c.bin": 7}


def test_two_machines_started_on_an_empty_remote_both_land(
    short_tmp: Path, bare_remote: Path
) -> None:
    """Both laid out their own first commit while the remote was empty; A pushed first.
    B's push is the usual race (replayed on top, renumbered), not "an unrelated history"."""
    storage = str(short_tmp / "storage")
    a = make_engine(make_config(short_tmp, storage, remote=bare_remote, name="ma"))
    b = make_engine(make_config(short_tmp, storage, remote=bare_remote, name="mb"))
    # each root commit carries its own Cpv-Registry id: never the same commit
    assert run(["git", "rev-list", "HEAD"], cwd=a.registry.path) != run(
        ["git", "rev-list", "HEAD"], cwd=b.registry.path
    )
    version_checkpoint(a, VersionRequest("shared/model", write(short_tmp / "a.pt", b"a")))
    got = version_checkpoint(b, VersionRequest("shared/model", write(short_tmp / "b.pt", b"b")))
    assert got.info.version == "v1.1.0"
    tags = run(["git", "tag", "-l"], cwd=bare_remote).split()
    assert tags == ["shared/model@v1.0.0", "shared/model@v1.1.0"]


def test_two_clones_version_concurrently_into_one_remote(
    short_tmp: Path, bare_remote: Path
) -> None:
    import threading

    storage = str(short_tmp / "storage")
    engines = [
        make_engine(make_config(short_tmp, storage, remote=bare_remote, name=f"m{i}"))
        for i in range(2)
    ]
    errors: list[BaseException] = []

    def work(i: int, engine: Engine) -> None:
        try:
            for j in range(6):
                p = write(short_tmp / f"src{i}" / f"e{j}.pt", f"{i}-{j}".encode())
                version_checkpoint(
                    engine, VersionRequest("shared/model" if j % 2 else f"own/m{i}", p)
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    clone = short_tmp / "clone"
    run(["git", "clone", "-q", str(bare_remote), str(clone)])
    tags = run(["git", "tag", "-l"], cwd=clone).split()
    shared = sorted(t for t in tags if t.startswith("shared/model@"))
    assert len(shared) == 6 and len(set(shared)) == 6
    assert len([t for t in tags if t.startswith("own/")]) == 6
    log = run(["git", "log", "--format=%H %P"], cwd=clone).splitlines()
    assert all(len(line.split()) <= 2 for line in log)  # linear: no merge commits
    jobs = run(["git", "log", "--format=%(trailers:key=Cpv-Job,valueonly)"], cwd=clone).split()
    assert len(jobs) == len(set(jobs)) and len([t for t in tags if "@v" in t]) == 12
    for t in shared:  # every tag's message matches the tag's own version
        msg = json.loads(run(["git", "tag", "-l", "--format=%(contents)", t], cwd=clone))
        assert t.endswith("@" + msg["version"])


@pytest.mark.parametrize("name", ["", "bad name", "-x", "a//b", "x/", "../etc"])
def test_invalid_artifact_names_are_refused(short_tmp: Path, name: str) -> None:
    engine = make_engine(make_config(short_tmp, str(short_tmp / "storage")))
    with pytest.raises(ProtocolError):
        version_checkpoint(engine, VersionRequest(name, write(short_tmp / "f.pt", b"x")))


def test_bad_input_leaves_no_partial_commit(short_tmp: Path, moto_server: str) -> None:
    cfg = make_config(short_tmp, str(short_tmp / "storage"))
    engine = make_engine(cfg)
    repo = cfg.registry.path
    head = run(["git", "rev-parse", "HEAD"], cwd=repo)
    with pytest.raises(InputError):
        version_checkpoint(engine, VersionRequest("a/b", short_tmp / "missing.pt"))
    ck = short_tmp / "ck"
    write(ck / "ok.bin", b"ok")
    (ck / "escape").symlink_to("/etc/passwd")
    with pytest.raises(InputError):
        version_checkpoint(engine, VersionRequest("a/b", ck))
    with pytest.raises(ProtocolError):
        engine.show("a/b", "1.x")
    with pytest.raises(NotFound):
        engine.show("a/b", "v9.0.0")
    # unreachable storage: a closed port
    bad = make_config(short_tmp, "s3://nobucket/x", endpoint="http://127.0.0.1:9", name="m2")
    with pytest.raises(CpvError):
        version_checkpoint(make_engine(bad), VersionRequest("a/b", write(short_tmp / "g.pt", b"g")))
    assert git_clean(make_config(short_tmp, "", name="m2").registry.path)
    assert run(["git", "tag", "-l"], cwd=make_config(short_tmp, "", name="m2").registry.path) == ""
    # unreachable git remote: the version is kept locally, nothing is lost
    cfg3 = make_config(
        short_tmp, str(short_tmp / "storage"), remote=short_tmp / "nowhere.git", name="m3"
    )
    with pytest.raises(CpvError):
        make_engine(cfg3)
    assert run(["git", "rev-parse", "HEAD"], cwd=repo) == head
    assert git_clean(repo)
