"""References resolved against a real git registry (and its bare remote), compared with
``gto show`` where that is cheap: DESIGN.md "References"."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from cpvctl.protocol import parse_ref
from cpvd.config.model import WatchConfig
from cpvd.errors import GitError, NotFound
from cpvd.registry.engine import Engine, VersionRequest
from cpvd.storage.hashing import hash_checkpoint
from tests.integration.engine_helpers import (
    BIN,
    make_config,
    make_engine,
    run,
    version_checkpoint,
    write,
)

ART = "vision/r50"
#: gto orders stage tags by their time in whole seconds (cpvd by the counter N): tags a
#: second apart keep ``gto show`` from seeing a tie it breaks at random
GTO_TICK = 1.1


def resolve(engine: Engine, text: str) -> str:
    return engine.resolve(parse_ref(text)).version


def gto_show(registry: Path, ref: str) -> list[str]:
    out = run([str(BIN / "gto"), "show", ref, "--json"], cwd=registry)
    return [v["version"] for v in json.loads(out)]


def engine_with_versions(root: Path, remote: Path | None, n: int) -> Engine:
    work = root / "work"
    cfg = make_config(
        root, str(root / "storage"), remote=remote, watches=(WatchConfig(work, ART),)
    )
    engine = make_engine(cfg)
    for i in range(n):
        version_checkpoint(engine, VersionRequest(ART, write(work / f"e{i}.pt", b"w%d" % i)))
    return engine


def version_unpushed(engine: Engine, path: Path) -> str:
    """Version a checkpoint the way the worker does, without the pusher's push."""
    content = hash_checkpoint(path)
    engine.upload(path, content)
    return engine.version(VersionRequest(ART, path), content, resume=True).info.version


def test_every_form_resolves_like_gto_show(short_tmp: Path, bare_remote: Path) -> None:
    engine = engine_with_versions(short_tmp, bare_remote, 3)
    reg = engine.registry.path
    assert resolve(engine, f"{ART}@v1.1") == "v1.1.0"
    assert resolve(engine, f"{ART}@v1.1.0") == "v1.1.0"
    assert resolve(engine, f"{ART}@latest") == "v1.2.0" == gto_show(reg, f"{ART}@latest")[0]
    assert resolve(engine, ART) == "v1.2.0"
    # a stage moved twice (prod: v1.0 -> v1.2 -> v1.1) points at its last assignment
    for version in ("v1.0.0", "v1.2.0", "v1.1.0"):
        time.sleep(GTO_TICK)
        engine.promote(ART, version, "prod")
        assert resolve(engine, f"{ART}#prod") == version == gto_show(reg, f"{ART}#prod")[0]
    engine.promote(ART, "v1.2.0", "best")
    assert resolve(engine, f"{ART}#best") == "v1.2.0" == gto_show(reg, f"{ART}#best")[0]
    assert resolve(engine, f"{ART}#prod") == "v1.1.0"
    assert [v.stages for v in engine.versions(ART)] == [["best"], ["prod"], []]


def test_bare_name_follows_a_revert_and_latest_does_not(short_tmp: Path, bare_remote: Path) -> None:
    engine = engine_with_versions(short_tmp, bare_remote, 3)
    engine.revert(ART, "v1.0.0")
    assert resolve(engine, ART) == "v1.0.0"  # the registry's HEAD points at the reverted-to
    assert resolve(engine, f"{ART}@latest") == "v1.2.0"  # still the newest pushed version
    # a fresh clone of the remote agrees: the revert was pushed
    clone = short_tmp / "clone"
    run(["git", "clone", "-q", str(bare_remote), str(clone)])
    log = run(["git", "log", "-1", "--format=%B"], cwd=clone)
    assert f"Cpv-Current: {ART}@v1.0.0" in log


def test_latest_skips_versions_not_yet_pushed(short_tmp: Path, bare_remote: Path) -> None:
    engine = engine_with_versions(short_tmp, bare_remote, 2)
    work = short_tmp / "work"
    # pushes paused: the newest version is tagged locally but not on the remote
    assert version_unpushed(engine, write(work / "e2.pt", b"w2")) == "v1.2.0"
    assert resolve(engine, ART) == "v1.2.0"
    assert resolve(engine, f"{ART}@latest") == "v1.1.0"
    # pushes failing: the remote refuses every push (a pre-receive hook)
    hook = bare_remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'registry is read-only today' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    assert version_unpushed(engine, write(work / "e3.pt", b"w3")) == "v1.3.0"
    with pytest.raises(GitError):
        engine.push()
    assert resolve(engine, f"{ART}@latest") == "v1.1.0"
    # once a push goes through, @latest moves to the newest
    os.unlink(hook)
    engine.push()
    assert resolve(engine, f"{ART}@latest") == "v1.3.0"


def test_latest_without_any_pushed_version_says_so(short_tmp: Path, bare_remote: Path) -> None:
    engine = engine_with_versions(short_tmp, bare_remote, 0)
    version_unpushed(engine, write(short_tmp / "work" / "e0.pt", b"w0"))
    assert resolve(engine, ART) == "v1.0.0"
    with pytest.raises(NotFound, match="no pushed version yet") as err:
        resolve(engine, f"{ART}@latest")
    assert err.value.code == "no_pushed_version"


def test_latest_without_a_remote_is_the_newest_tagged(short_tmp: Path) -> None:
    engine = engine_with_versions(short_tmp, None, 2)
    assert resolve(engine, f"{ART}@latest") == "v1.1.0"


@pytest.mark.parametrize(
    ("ref", "code", "message"),
    [
        (f"{ART}#prod", "unknown_stage", "no version in stage 'prod'"),
        (f"{ART}@v9.0", "unknown_version", "has no version v9.0.0"),
        ("team/nothing@latest", "unknown_artifact", "unknown artifact"),
        ("team/nothing#prod", "unknown_artifact", "unknown artifact"),
        ("team/nothing", "unknown_artifact", "unknown artifact"),
    ],
)
def test_unknown_references_name_what_is_unknown(
    short_tmp: Path, ref: str, code: str, message: str
) -> None:
    engine = engine_with_versions(short_tmp, None, 1)
    with pytest.raises(NotFound, match=message) as err:
        resolve(engine, ref)
    assert err.value.code == code


def test_withdrawn_stage_falls_back_like_gto(short_tmp: Path) -> None:
    engine = engine_with_versions(short_tmp, None, 2)
    reg = engine.registry.path
    engine.promote(ART, "v1.0.0", "prod")
    time.sleep(GTO_TICK)
    engine.promote(ART, "v1.1.0", "prod")
    time.sleep(GTO_TICK)
    run([str(BIN / "gto"), "deprecate", ART, "v1.1.0", "prod"], cwd=reg)
    engine.invalidate()
    assert resolve(engine, f"{ART}#prod") == "v1.0.0" == gto_show(reg, f"{ART}#prod")[0]


def test_latest_counts_versions_another_machine_pushed(short_tmp: Path, bare_remote: Path) -> None:
    a = engine_with_versions(short_tmp / "a", bare_remote, 1)
    storage = str(short_tmp / "a" / "storage")
    b = make_engine(make_config(short_tmp / "b", storage, remote=bare_remote))
    assert resolve(b, f"{ART}@latest") == "v1.0.0"
    version_checkpoint(a, VersionRequest(ART, write(short_tmp / "a" / "work" / "n.pt", b"new")))
    a.promote(ART, "v1.1.0", "prod")
    # b made no version and pushed nothing, yet @latest sees a's push (and its stage tag)
    assert resolve(b, f"{ART}@latest") == "v1.1.0"
    assert resolve(b, f"{ART}#prod") == "v1.1.0"
    assert b.manifest(ART, "v1.1.0").md5 == a.show(ART, "v1.1.0").md5


def test_latest_with_the_remote_unreachable_answers_what_the_clone_knows(
    short_tmp: Path, bare_remote: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_with_versions(short_tmp, bare_remote, 2)
    bare_remote.rename(short_tmp / "gone.git")
    assert resolve(engine, f"{ART}@latest") == "v1.1.0"
    assert "answered from what this clone knows" in caplog.text
