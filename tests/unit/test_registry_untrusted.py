"""Everything read from a registry is untrusted: arbitrary tag messages, tag names, pointer
files, ``dvc.yaml`` and ``.dir`` manifests give a clean CpvError (or a skipped tag) or a
value whose names and paths are safe to write below a directory; never another exception,
and never a write outside the target."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpvd.errors import CpvError
from cpvd.registry import index as index_module
from cpvd.registry.dvcfiles import DvcFileError, parse_dvc_yaml, parse_pointer
from cpvd.registry.index import read_index
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.retrieve import dir_entries, download
from cpvd.registry.safety import (
    UnsafeInput,
    child_of,
    create_below,
    safe_component,
    safe_md5,
    safe_relpath,
)

MD5 = "0123456789abcdef0123456789abcdef"
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

#: names and paths an attacker would try, mixed into the arbitrary text
NASTY = st.sampled_from(
    [
        "../escaped.txt", "..", ".", "", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a/",
        "x\x00y", "x\ny", "ok\nCpv-Job: " + "f" * 32, "\\..\\x", "a" * 300, "é.bin", "c:x",
        "ok.bin", "dir/ok.bin", "checkpoint",
    ]
)
TEXT = st.one_of(NASTY, st.text(max_size=40))
JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), TEXT
)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
MD5ISH = st.one_of(
    st.just(MD5), st.just(MD5 + ".dir"), st.just(MD5.upper()), st.text(max_size=40), JSON_SCALAR
)


def _fields() -> st.SearchStrategy[dict[str, Any]]:
    """Tag-message bodies close enough to cpvd's to reach its checks, with bad values."""
    return st.fixed_dictionaries(
        {"md5": MD5ISH},
        optional={
            "name": st.one_of(NASTY, JSON_SCALAR),
            "source": st.one_of(NASTY, JSON_SCALAR),
            "size": st.one_of(st.integers(-5, 2**64), JSON_SCALAR),
            "nfiles": st.one_of(st.integers(-5, 10), JSON_SCALAR),
            "is_dir": JSON_SCALAR,
            "kind": st.one_of(st.sampled_from(["model", "data"]), JSON_SCALAR),
            "metrics": JSON,
            "lineage": st.one_of(st.dictionaries(TEXT, TEXT, max_size=3), JSON),
            "parent": st.one_of(st.sampled_from(["v1.0.0", "v1.0", "x"]), JSON_SCALAR),
            "job_id": JSON_SCALAR,
            "host": JSON_SCALAR,
            "created_at": JSON_SCALAR,
            "cpv_version": JSON_SCALAR,
            "extra": JSON,
        },
    )


def _assert_safe_info(info: VersionInfo) -> None:
    assert safe_component(info.name) == info.name
    assert safe_md5(info.md5, is_dir=info.is_dir) == info.md5
    assert isinstance(info.size, int) and info.size >= 0
    assert isinstance(info.nfiles, int) and info.nfiles >= 0
    assert isinstance(info.metrics, dict) and isinstance(info.lineage, dict)
    info.message()  # and it can be written back
    info.to_json()


@SETTINGS
@given(
    artifact=st.one_of(st.just("team/m"), NASTY),
    version=st.one_of(st.just("v1.2.0"), TEXT),
    message=st.one_of(st.text(), _fields().map(json.dumps), JSON.map(json.dumps)),
)
def test_any_tag_message_is_skipped_or_safe(artifact: str, version: str, message: str) -> None:
    info = VersionInfo.from_message(artifact, version, message)
    if info is not None:
        _assert_safe_info(info)


@pytest.mark.parametrize(
    "name", ["../escaped.txt", "..", "", "/abs", "a/b", "x\x00", "x\nCpv-Job: 1", "a\x7f"]
)
def test_a_tag_naming_a_path_is_skipped_with_a_warning(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"md5": MD5, "size": 1, "nfiles": 1, "is_dir": False, "name": name, "source": "/w/x"}
    assert VersionInfo.from_message("a", "v1.0.0", json.dumps(body)) is None
    assert "skipping tag 'a@v1.0.0'" in caplog.text
    body["name"] = "ok.bin"
    assert VersionInfo.from_message("a", "v1.0.0", json.dumps(body)) is not None


@pytest.mark.parametrize(
    "patch",
    [
        {"md5": "../../x"},
        {"md5": MD5 + ".dir"},  # a directory md5 on a file version
        {"size": -1},
        {"size": "1"},
        {"nfiles": True},
        {"is_dir": "no"},
        {"kind": "../model"},
        {"lineage": {"../d": "v1.0.0"}},
        {"lineage": {"d": "latest"}},
        {"metrics": [1]},
        {"parent": "v1"},
    ],
)
def test_each_bad_field_skips_the_tag(patch: dict[str, Any]) -> None:
    body = {"md5": MD5, "size": 1, "nfiles": 1, "is_dir": False, "name": "x", "source": "/w/x"}
    assert VersionInfo.from_message("a", "v1.0.0", json.dumps({**body, **patch})) is None


@SETTINGS
@given(
    text=st.one_of(
        st.text(),
        st.builds(
            lambda out: json.dumps({"outs": [out]}),  # JSON is YAML
            st.fixed_dictionaries(
                {"md5": MD5ISH},
                optional={"size": JSON_SCALAR, "nfiles": JSON_SCALAR, "path": TEXT},
            ),
        ),
        JSON.map(json.dumps),
    )
)
def test_any_pointer_file_is_an_error_or_a_safe_pointer(text: str) -> None:
    try:
        p = parse_pointer(text, "artifacts/a/checkpoint.dvc")
    except DvcFileError:
        return
    assert safe_md5(p.md5) == p.md5 and p.is_dir == p.md5.endswith(".dir")
    assert p.size >= 0 and p.nfiles >= 0


@SETTINGS
@given(
    text=st.one_of(
        st.text(),
        st.dictionaries(TEXT, st.fixed_dictionaries({}, optional={"type": JSON_SCALAR}))
        .map(lambda a: json.dumps({"artifacts": a})),
        JSON.map(json.dumps),
    )
)
def test_any_dvc_yaml_is_an_error_or_valid_names(text: str) -> None:
    try:
        arts = parse_dvc_yaml(text)
    except DvcFileError:
        return
    for name in arts:
        assert safe_relpath(name) == name and not name.startswith("-")


class FakeStorage:
    """Objects by md5 in memory; ``.dir`` manifests under their real md5."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def add_dir(self, listed: Any) -> str:
        data = json.dumps(listed).encode()
        md5 = hashlib.md5(data).hexdigest() + ".dir"
        self.objects[md5] = data
        return md5

    def open_object(self, md5: str) -> BinaryIO:
        if md5 not in self.objects:
            from cpvd.errors import NotFound

            raise NotFound(f"object {md5} missing")
        return io.BytesIO(self.objects[md5])


CONTENTS = [b"a", b"bb", b""]
STORED = {hashlib.md5(c).hexdigest(): c for c in CONTENTS}
ENTRY = st.fixed_dictionaries(
    {
        "relpath": st.one_of(NASTY, st.text(max_size=20), JSON_SCALAR),
        "md5": st.one_of(st.sampled_from(sorted(STORED)), MD5ISH),
    },
    optional={"size": st.one_of(st.integers(-3, 10), JSON_SCALAR)},
)
MANIFEST = st.one_of(st.lists(ENTRY, max_size=6), JSON)


@SETTINGS
@given(listed=MANIFEST)
def test_any_dir_manifest_is_an_error_or_safe_entries(listed: Any) -> None:
    storage = FakeStorage(dict(STORED))
    md5 = storage.add_dir(listed)
    try:
        entries = dir_entries(storage, md5)  # type: ignore[arg-type]
    except CpvError:
        return
    seen = set()
    for e in entries:
        assert safe_relpath(e.relpath) == e.relpath and e.relpath not in seen
        assert safe_md5(e.md5, is_dir=False) == e.md5 and e.size >= 0
        seen.add(e.relpath)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listed=MANIFEST, name=st.one_of(NASTY, st.just("d")))
def test_downloading_any_manifest_writes_only_below_the_target(listed: Any, name: str) -> None:
    storage = FakeStorage(dict(STORED))
    md5 = storage.add_dir(listed)
    base = Path(tempfile.mkdtemp(prefix="cpv-dl-"))
    try:
        where = base / "w" / "target"
        where.mkdir(parents=True)
        (base / "w" / "sibling").symlink_to(base)  # a link a relpath might try to use
        info = VersionInfo("a", "v1.0.0", md5, 1, 1, True, name, "/w/d")
        try:
            out = download(storage, info, where)  # type: ignore[arg-type]
        except CpvError:
            out = None
        written = sorted(str(p.relative_to(base)) for p in base.rglob("*"))
        outside = [p for p in written if not p.startswith(("w/target", "w/sibling")) and p != "w"]
        assert outside == [] and sorted(os.listdir(base)) == ["w"]
        if out is not None:
            assert out.parent == where
            for p in out.rglob("*"):
                assert not p.is_symlink()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@SETTINGS
@given(
    records=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["a@v1.0.0", "a#prod#1", "../x@v1.0.0", "a#x/y#1"]), TEXT),
            st.sampled_from(["tag", "commit"]),
            st.one_of(_fields().map(json.dumps), st.text(max_size=30)),
        ),
        max_size=5,
    )
)
def test_any_tag_listing_reads_into_an_index_of_safe_versions(
    records: list[tuple[str, str, str]],
) -> None:
    """``read_index`` over arbitrary ``for-each-ref`` output: names, types and messages."""
    out = "".join(
        f"{name}\x00{kind}\x00{'1' * 40}\x00{'2' * 40 if kind == 'tag' else ''}\x00{msg}\x1e\n"
        for name, kind, msg in records
    ).encode("utf-8", "surrogatepass")

    def fake_git(args: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, 0, out, b"")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(index_module, "run_git", fake_git)
        index = read_index(Path("/nonexistent"))
    for name, vs in index.versions.items():
        safe_relpath(name)
        for v in vs:
            _assert_safe_info(v)
    for s in index.stage_tags:
        safe_relpath(s.artifact)
        assert "/" not in s.stage


@pytest.mark.parametrize("rel", ["../x", "/x", "a/../../x", "a//b", "./a", "a/.", "", "a\x00"])
def test_unsafe_relpaths_are_refused(rel: str) -> None:
    with pytest.raises(UnsafeInput):
        safe_relpath(rel)


def test_create_below_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "d").symlink_to(outside)
    (root / "f").symlink_to(outside / "f")
    for rel in ("d/x", "f"):
        with pytest.raises(OSError):
            os.close(create_below(root, rel))
    assert list(outside.iterdir()) == []
    os.close(create_below(root, "new/x"))
    assert (root / "new" / "x").is_file()
    with pytest.raises(UnsafeInput):
        child_of(root, "../x")
