"""cpvd.storage.hashing gives exactly what DVC 3 records: checked against the real ``dvc add``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from cpvd.errors import InputError, IntegrityError
from cpvd.storage import hashing
from cpvd.storage.hashing import FileEntry, dir_manifest, hash_checkpoint, md5_file

DVC = str(Path(sys.executable).with_name("dvc"))


def _make_tree(root: Path) -> None:
    """A directory checkpoint with the awkward cases: nesting, empty file and dir, CRLF
    text, a name sorting between ``sub`` and ``sub/...``, non-ASCII, DVC-ignored names."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "emptydir" / "alsoempty").mkdir(parents=True)
    (root / ".hg").mkdir()
    (root / "a.txt").write_bytes(b"hello\r\nworld\r\n")
    (root / "empty").write_bytes(b"")
    (root / "sub.txt").write_bytes(b"z\n")
    (root / "sub" / "b").write_bytes(b"x\n")
    (root / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(100_000))
    (root / "sub" / ".git").write_bytes(b"gitdir: nowhere\n")
    (root / ".hg" / "ignored").write_bytes(b"ignored by dvc\n")
    (root / "k\u00e9").write_bytes(b"unicode\n")
    (root / ".metadata").write_bytes(b"dot files inside a checkpoint count\n")


def test_matches_real_dvc_add(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=repo, check=True)
    (repo / "model.pt").write_bytes(b"line one\r\nline two\n" * 1000)
    _make_tree(repo / "ckpt")
    (repo / "nothing").mkdir()
    subprocess.run([DVC, "add", "-q", "model.pt", "ckpt", "nothing"], cwd=repo, check=True)

    for name in ("model.pt", "ckpt", "nothing"):
        dvc_file = (repo / f"{name}.dvc").read_text()
        out = YAML(typ="safe").load(dvc_file)["outs"][0]
        ours = hash_checkpoint(repo / name)
        assert ours.md5 == out["md5"], name
        assert ours.size == out["size"], name
        assert out["hash"] == "md5"
        # the exact text (and field order) DVC 3 writes, for whoever writes pointers
        nfiles = f"  nfiles: {ours.nfiles}\n" if ours.is_dir else ""
        assert dvc_file == (
            f"outs:\n- md5: {ours.md5}\n  size: {ours.size}\n{nfiles}  hash: md5\n  path: {name}\n"
        )
        if ours.is_dir:
            assert ours.nfiles == out["nfiles"]
            cached = repo / ".dvc" / "cache" / "files" / "md5" / ours.md5[:2] / ours.md5[2:]
            assert ours.manifest == cached.read_bytes(), name
        else:
            assert "nfiles" not in out
            assert ours.manifest is None
            assert ours.entries == (FileEntry("model.pt", out["md5"], out["size"]),)
            assert ours.md5 == hashlib.md5((repo / name).read_bytes()).hexdigest()

    ckpt = hash_checkpoint(repo / "ckpt")
    rels = [e.relpath for e in ckpt.entries]
    assert rels == sorted(rels)
    assert ".hg/ignored" not in rels and "sub/.git" not in rels
    assert "emptydir" not in "".join(rels)
    assert {".metadata", "k\u00e9", "sub.txt", "sub/b", "sub/deeper/c.bin"} <= set(rels)
    # every file object DVC cached is one of our entries
    for e in ckpt.entries:
        obj = repo / ".dvc" / "cache" / "files" / "md5" / e.md5[:2] / e.md5[2:]
        assert obj.stat().st_size == e.size


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.lists(
            st.text(
                st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
                min_size=1,
                max_size=6,
            ),
            min_size=1,
            max_size=3,
        ).map("/".join),
        st.binary(max_size=16).map(lambda b: hashlib.md5(b).hexdigest()),
        max_size=8,
    )
)
def test_dir_manifest_equals_dvc_data_tree(files: dict[str, str]) -> None:
    """dvc_data's own Tree is the oracle for ordering, escaping and the ``.dir`` digest."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for rel, md5 in files.items():
        tree.add(tuple(rel.split("/")), Meta(), HashInfo("md5", md5))
    tree.digest()
    entries = [FileEntry(rel, md5, 0) for rel, md5 in reversed(list(files.items()))]
    oid, data = dir_manifest(entries)
    assert data == tree.as_bytes()
    assert oid == tree.hash_info.value


def test_md5_file_streams_in_chunks_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 1000)
    data = os.urandom(10_500)
    f = tmp_path / "f"
    f.write_bytes(data)
    seen: list[int] = []
    assert md5_file(f, seen.append) == (hashlib.md5(data).hexdigest(), len(data))
    assert seen == [1000] * 10 + [500]


def test_file_changed_while_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 1000)
    f = tmp_path / "growing.pt"
    f.write_bytes(b"x" * 5000)

    def writer_still_going(_n: int) -> None:
        with f.open("ab") as fh:
            fh.write(b"more")

    with pytest.raises(IntegrityError, match="changed while hashed"):
        hash_checkpoint(f, writer_still_going)


def test_file_rewritten_same_size_while_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size but a new mtime (an in-place rewrite) is caught too."""
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 1000)
    f = tmp_path / "d" / "w.bin"
    f.parent.mkdir()
    f.write_bytes(b"a" * 3000)
    old = f.stat().st_mtime_ns

    def rewrite(_n: int) -> None:
        with f.open("r+b") as fh:
            fh.write(b"b")
        os.utime(f, ns=(old + 10**9, old + 10**9))

    with pytest.raises(IntegrityError, match="changed while hashed"):
        hash_checkpoint(f.parent, rewrite)


def test_missing_path_is_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match=r"nope\.pt") as exc:
        hash_checkpoint(missing)
    assert exc.value.code == "invalid_path"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_input_error(tmp_path: Path) -> None:
    f = tmp_path / "locked.pt"
    f.write_bytes(b"x")
    f.chmod(0)
    with pytest.raises(InputError, match=r"locked\.pt"):
        hash_checkpoint(f)


def test_symlink_outside_root_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "w.bin").write_bytes(b"w")
    (ckpt / "escape").symlink_to(secret)
    with pytest.raises(InputError, match="escape") as exc:
        hash_checkpoint(ckpt)
    assert exc.value.code == "invalid_path"
    assert "outside" in exc.value.message


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    (ckpt / "shards").mkdir(parents=True)
    (ckpt / "shards" / "s0").write_bytes(b"shard zero")
    (ckpt / "latest").symlink_to("shards/s0")
    h = hash_checkpoint(ckpt)
    by_rel = {e.relpath: e for e in h.entries}
    assert by_rel["latest"].md5 == by_rel["shards/s0"].md5 == hashlib.md5(b"shard zero").hexdigest()
    assert h.nfiles == 2 and h.size == 20


@pytest.mark.parametrize("kind", ["dangling", "dir"])
def test_dangling_and_directory_symlinks_are_refused(tmp_path: Path, kind: str) -> None:
    ckpt = tmp_path / "ckpt"
    (ckpt / "real").mkdir(parents=True)
    (ckpt / "real" / "f").write_bytes(b"f")
    target = "gone" if kind == "dangling" else "real"
    (ckpt / "link").symlink_to(target)
    with pytest.raises(InputError, match="link") as exc:
        hash_checkpoint(ckpt)
    assert exc.value.code == "invalid_path"


def test_empty_directory_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "e" / "inner").mkdir(parents=True)
    h = hash_checkpoint(tmp_path / "e")
    assert (h.md5, h.size, h.nfiles, h.manifest) == (
        "d751713988987e9331980363e24189ce.dir",
        0,
        0,
        b"[]",
    )
