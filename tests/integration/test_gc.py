"""gc on real git (a bare remote, deregistration tags made by another clone with plain
``git tag -a``, as GTO does) and real storage (a local directory, moto's S3)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.errors import CpvError
from cpvd.lifecycle.gc import GcRefused, collect, read_roots
from cpvd.lifecycle.marker import ForeignStorage
from cpvd.registry.engine import Engine
from cpvd.registry.model import VersionRequest
from cpvd.storage.base import CollectableStorage
from tests.integration.engine_helpers import (
    dvc,
    make_config,
    make_engine,
    run,
    tree_bytes,
    version_checkpoint,
    write,
)

ART = "team/model"
DAY = 24 * 3600.0


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def stored(engine: Engine) -> set[str]:
    st = engine.storage
    assert isinstance(st, CollectableStorage)
    return {o.md5 for o in st.list_objects()}


def deregister(remote: Path, work: Path, *versions: str) -> None:
    """Prune versions the way ``gto deprecate NAME VERSION`` does, from another clone."""
    clone = work / "other-clone"
    if not clone.exists():
        run(["git", "clone", "-q", str(remote), str(clone)])
    run(["git", "fetch", "-q", "--tags"], cwd=clone)
    for n, version in enumerate(versions, start=1):
        commit = run(["git", "rev-parse", f"{ART}@{version}^{{commit}}"], cwd=clone).strip()
        tag = f"{ART}@{version}!#{n}"
        run(["git", "tag", "-a", tag, "-m", f"Deregistering {ART} {version}", commit], cwd=clone)
        run(["git", "push", "-q", "origin", f"refs/tags/{tag}"], cwd=clone)


def gc(engine: Engine, grace: float = 0.0, dry_run: bool = False) -> dict[str, object]:
    st = engine.storage
    assert isinstance(st, CollectableStorage)
    return collect(st, read_roots(engine), grace, dry_run)


@pytest.fixture
def registry(
    short_tmp: Path, bare_remote: Path, storage: tuple[str, str | None]
) -> Iterator[tuple[Engine, dict[str, dict[str, bytes]]]]:
    """Four versions: v1.0.0 dir {a, b}, v1.1.0 file x, v1.2.0 dir {a, c}, v1.3.0 file y."""
    url, endpoint = storage
    engine = make_engine(make_config(short_tmp, url, endpoint=endpoint, remote=bare_remote))
    work = short_tmp / "work"
    a, b, c, x, y = (os.urandom(3000 + i) for i in range(5))
    contents = {
        "v1.0.0": {"a.bin": a, "b.bin": b},
        "v1.1.0": {"": x},
        "v1.2.0": {"a.bin": a, "c.bin": c},
        "v1.3.0": {"": y},
    }
    for version, files in contents.items():
        if "" in files:
            path = write(work / f"{version}.pt", files[""])
        else:
            path = work / f"ck-{version}"
            for rel, data in files.items():
                write(path / rel, data)
        assert version_checkpoint(engine, VersionRequest(ART, path)).info.version == version
    try:
        yield engine, contents
    finally:
        engine.storage.close()


def test_gc_deletes_exactly_the_pruned_versions_unique_objects(
    registry: tuple[Engine, dict[str, dict[str, bytes]]],
    short_tmp: Path,
    bare_remote: Path,
    storage: tuple[str, str | None],
) -> None:
    engine, contents = registry
    v100 = engine.show(ART, "v1.0.0").md5
    before = stored(engine)
    deregister(bare_remote, short_tmp, "v1.0.0", "v1.1.0")  # on the remote only: gc fetches
    expected = {v100, md5(contents["v1.0.0"]["b.bin"]), md5(contents["v1.1.0"][""])}
    assert expected <= before

    dry = gc(engine, dry_run=True)
    assert (dry["objects_to_delete"], dry["objects_deleted"]) == (3, 0)
    assert (dry["versions_kept"], dry["versions_pruned"]) == (2, 2)
    assert stored(engine) == before  # a dry run deletes nothing
    assert isinstance(engine.storage, CollectableStorage)
    assert engine.storage.read_marker() is None  # nor writes anything (the marker comes later)

    young = gc(engine, grace=DAY)  # everything was stored moments ago
    assert (young["objects_deleted"], young["objects_young"]) == (0, 3)
    assert stored(engine) == before

    done = gc(engine)
    assert done["objects_deleted"] == 3
    small = len(contents["v1.0.0"]["b.bin"]) + len(contents["v1.1.0"][""])
    assert done["bytes_deleted"] == dry["bytes_to_delete"] > small  # + v1.0.0's manifest
    assert stored(engine) == before - expected
    assert gc(engine)["objects_deleted"] == 0  # a rerun finds nothing more

    # every kept version pulls back byte for byte with plain git + dvc in a fresh clone
    _, endpoint = storage
    clone = short_tmp / "fresh"
    run(["git", "clone", "-q", str(bare_remote), str(clone)])
    for version in ("v1.2.0", "v1.3.0"):
        run(["git", "checkout", "-q", f"{ART}@{version}"], cwd=clone)
        dvc("pull", "-q", "-j", "1", cwd=clone, endpoint=endpoint)
        got = tree_bytes(clone / "artifacts" / ART / "checkpoint")
        assert got == contents[version]
        run(["rm", "-rf", str(clone / "artifacts" / ART / "checkpoint")])


def test_marker_names_the_owner_and_gc_refuses_a_foreign_prefix(
    registry: tuple[Engine, dict[str, dict[str, bytes]]],
    short_tmp: Path,
    storage: tuple[str, str | None],
) -> None:
    engine, _ = registry
    before = stored(engine)
    gc(engine)  # claims the storage for this registry
    st = engine.storage
    assert isinstance(st, CollectableStorage)
    raw = st.read_marker()
    assert raw is not None
    root = run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=engine.registry.path).strip()
    assert root.encode() in raw
    # another registry (its own history, no remote) on the same storage prefix
    url, endpoint = storage
    other = make_engine(make_config(short_tmp, url, endpoint=endpoint, name="intruder"))
    try:
        with pytest.raises(ForeignStorage):
            gc(other, dry_run=True)  # a dry run checks the owner too, though it writes none
        with pytest.raises(ForeignStorage) as err:
            gc(other)
        assert "another registry" in err.value.message
        assert str(engine.registry.cfg.remote) in err.value.message  # names the owner
        assert stored(engine) == before  # the intruder deleted nothing
    finally:
        other.storage.close()


def test_gc_refuses_when_a_kept_manifest_is_missing(
    registry: tuple[Engine, dict[str, dict[str, bytes]]], short_tmp: Path, bare_remote: Path
) -> None:
    engine, _ = registry
    st = engine.storage
    assert isinstance(st, CollectableStorage)
    deregister(bare_remote, short_tmp, "v1.1.0")
    st.delete_objects([engine.show(ART, "v1.2.0").md5])  # a kept version's .dir is gone
    before = stored(engine)
    with pytest.raises(GcRefused) as err:
        gc(engine)
    assert f"{ART}@v1.2.0" in err.value.message
    assert stored(engine) == before  # nothing deleted, not even the pruned v1.1.0's object
    assert isinstance(err.value, CpvError)
