"""The pure decisions of gc: which versions are pruned (tag names), what is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.lifecycle.kept import kept_versions
from cpvd.lifecycle.marker import ForeignStorage, RegistryIdentity, check_owner
from cpvd.lifecycle.plan import plan_gc
from cpvd.registry.index import RegistryIndex
from cpvd.registry.metadata import VersionInfo
from cpvd.storage.base import StoredObject, md5_of_key

H = "0123456789abcdef0123456789abcdef"


def info(artifact: str, version: str) -> VersionInfo:
    return VersionInfo(artifact, version, H, 1, 1, False, "x.pt", "/x.pt", commit="c" * 40)


def test_kept_versions_follow_the_index_and_keep_unreadable_tags() -> None:
    """gc's kept set is the index's: only a deregistration the index accepted prunes."""
    index = RegistryIndex()
    pruned = info("a/m", "v1.0.0")
    pruned.pruned = True
    index.versions["a/m"] = [info("a/m", "v1.1.0"), pruned]
    for t in ("a/m@v1.0.0", "a/m@v1.1.0", "a/m@v1.0.0!#1", "a/m@v1.2.0", "a/m@v1.3.0",
              "a/m@v1.3.0!#1", "a/m@v1.1.0!#2"):  # fmt: skip
        index.tags[t] = "c" * 40
    kept = kept_versions(index)
    # v1.1.0 has a deregistration tag the index did not accept (pruned=False): kept
    assert [v.version for v in kept.versions] == ["v1.1.0"]
    assert kept.pruned == 1
    # a version tag cpvd could not read is kept (its pointer is read instead)
    assert kept.unreadable == ["a/m@v1.2.0", "a/m@v1.3.0"]


def obj(md5: str, age: float, size: int = 10) -> StoredObject:
    return StoredObject(md5, size, 1000.0 - age)


def test_plan_deletes_only_unreferenced_objects_older_than_the_grace() -> None:
    ref, old, young, dir_old = H, "1" * 32, "2" * 32, "3" * 32 + ".dir"
    stored = [obj(ref, 500), obj(old, 500, 7), obj(young, 5), obj(dir_old, 500, 3)]
    plan = plan_gc(stored, {ref}, now=1000.0, grace=100.0)
    assert sorted(o.md5 for o in plan.delete) == [old, dir_old]
    assert (plan.listed, plan.referenced, plan.young, plan.delete_bytes) == (4, 1, 1, 10)
    # files before manifests, so a killed gc never leaves a manifest without its files
    assert [o.md5 for o in plan.ordered()] == [old, dir_old]
    # exactly at the grace boundary counts as old; referenced is never deleted, however old
    assert [o.md5 for o in plan_gc([obj(old, 100)], set(), 1000.0, 100.0).delete] == [old]
    assert plan_gc([obj(ref, 1e9)], {ref}, 1000.0, 0.0).delete == []


@pytest.mark.parametrize(
    ("two", "rest", "md5"),
    [
        ("01", "23456789abcdef0123456789abcdef", H),
        ("01", "23456789abcdef0123456789abcdef.dir", H + ".dir"),
        ("01", ".cpv-tmp-23456789abcdef0123456789abcdef-1", None),  # a temp upload
        ("0", "123456789abcdef0123456789abcdef", None),
        ("01", "23456789ABCDEF0123456789abcdef", None),
        ("01", "../../etc", None),
    ],
)
def test_only_layout_names_are_objects(two: str, rest: str, md5: str | None) -> None:
    assert md5_of_key(two, rest) == md5


def test_owner_check_names_the_other_registry() -> None:
    me = RegistryIdentity("a" * 40, "git@host:me.git", "/reg", True)
    check_owner({"registry_id": "a" * 40}, me)
    with pytest.raises(ForeignStorage) as err:
        check_owner({"registry_id": "b" * 40, "remote": "git@host:other.git", "host": "h2"}, me)
    assert "git@host:other.git" in err.value.message and "bbbbbbbbbbbb" in err.value.message


def test_retention_config_and_keep_local() -> None:
    from cpvd.config.dump import dump_config
    from cpvd.config.load import parse_config
    from cpvd.errors import ConfigError

    cfg = parse_config(
        "[retention]\ngrace_hours = 2.5\ngc_interval = 6\n"
        '[[watch]]\npath = "/data/ck"\nartifact = "a/m"\nkeep_local = 3\n',
        "t.toml",
    )
    assert (cfg.retention.grace_hours, cfg.retention.gc_interval) == (2.5, 6.0)
    assert cfg.watches[0].keep_local == 3
    assert parse_config(dump_config(cfg), "again.toml").retention == cfg.retention
    default = parse_config("", "empty.toml")
    assert (default.retention.grace_hours, default.retention.gc_interval) == (24.0, 0.0)
    assert default.watches == ()
    for text, key in (
        ("[retention]\ngrace_hours = -1\n", "grace_hours"),
        ("[retention]\ngc_intervall = 1\n", "gc_intervall"),
        ('[[watch]]\npath = "/d"\nartifact = "a"\nkeep_local = -2\n', "keep_local"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(text, "bad.toml")
        assert key in err.value.message


def test_cpvctl_gc_parses_and_renders() -> None:
    from cpvctl.cli import HANDLERS, build_parser
    from cpvctl.gc import render_gc

    args = build_parser().parse_args(["gc", "--dry-run", "--json"])
    assert (args.verb, args.dry_run, args.json) == ("gc", True, True)
    assert "gc" in HANDLERS
    text = render_gc(
        {"dry_run": True, "objects_to_delete": 3, "bytes_to_delete": 3 * 1024 * 1024,
         "versions_kept": 2, "versions_pruned": 1, "grace_hours": 24.0, "objects_young": 4}
    )  # fmt: skip
    assert text.splitlines()[0] == "would delete 3 objects (3.0 MiB)"
    assert "2 kept, 1 pruned" in text and "(24 h, kept): 4" in text


def test_a_stopping_daemon_ends_gc_between_batches(tmp_path: Path) -> None:
    import hashlib
    import threading

    from cpvd.lifecycle.gc import GcStopped, delete_planned
    from cpvd.storage.local import LocalStorage

    storage = LocalStorage(tmp_path)
    blobs = [bytes([i]) * 10 for i in range(3)]
    for b in blobs:
        storage.put_bytes(hashlib.md5(b).hexdigest(), b)
    plan = plan_gc(storage.list_objects(), set(), now=2e9, grace=0)
    assert len(plan.delete) == 3
    stop = threading.Event()
    stop.set()
    with pytest.raises(GcStopped):
        delete_planned(storage, plan, None, stop)
    assert len(list(storage.list_objects())) == 3
    assert delete_planned(storage, plan, None, threading.Event()) == 30
    assert list(storage.list_objects()) == []
