"""Issue 15 #6: configs where the daemon would watch itself, or watch a file twice, or give
two artifacts overlapping pointer paths, are refused at load and by ``cpvd check``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.cli import main
from cpvd.config.load import config_from_flags, load_config
from cpvd.config.model import Config, DaemonConfig, RegistryConfig, StorageConfig
from cpvd.errors import ConfigError


def _toml(tmp_path: Path, watches: list[tuple[Path, str]], storage: str | None = None) -> Path:
    lines = [
        "[daemon]",
        f'state_dir = "{tmp_path / "state"}"',
        "[registry]",
        f'path = "{tmp_path / "registry"}"',
        "[storage]",
        f'url = "{storage or tmp_path / "storage"}"',
    ]
    for path, artifact in watches:
        lines += ["[[watch]]", f'path = "{path}"', f'artifact = "{artifact}"']
    p = tmp_path / "cpvd.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _refused(tmp_path: Path, watches: list[tuple[Path, str]], storage: str | None = None) -> str:
    p = _toml(tmp_path, watches, storage)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value.message


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("storage", "[storage] url"),
        ("storage/files/md5", "[storage] url"),  # inside it
        ("registry", "[registry] path"),
        ("registry/artifacts", "[registry] path"),
        ("state", "[daemon] state_dir"),
        ("state/snapshots", "[daemon] state_dir"),
        ("", "[daemon] state_dir"),  # containing all of them
    ],
)
def test_watch_on_the_daemons_own_directories_is_refused(
    tmp_path: Path, where: str, key: str
) -> None:
    watched = tmp_path / where if where else tmp_path
    msg = _refused(tmp_path, [(watched, "a/b")])
    assert "[[watch]] #1 path" in msg and key in msg, msg
    assert f'"{watched}"' in msg and "own writes" in msg, msg


def test_a_symlink_cannot_hide_the_overlap(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "registry")
    msg = _refused(tmp_path, [(tmp_path / "alias", "a/b")])
    assert "[registry] path" in msg and str(tmp_path / "alias") in msg, msg


@pytest.mark.parametrize("inner_first", [False, True])
def test_watch_inside_another_watch_is_refused(tmp_path: Path, inner_first: bool) -> None:
    outer, inner = tmp_path / "runs", tmp_path / "runs" / "r50" / "ckpt"
    watches = [(outer, "a/outer"), (inner, "a/inner")]
    if inner_first:
        watches.reverse()
    msg = _refused(tmp_path, watches)
    assert "[[watch]] #1 path" in msg and "[[watch]] #2 path" in msg, msg
    assert f'"{outer}"' in msg and f'"{inner}"' in msg and "twice" in msg, msg


@pytest.mark.parametrize("order", [("t1", "t1/checkpoint"), ("t1/checkpoint", "t1")])
def test_nested_artifact_names_are_refused(tmp_path: Path, order: tuple[str, str]) -> None:
    msg = _refused(tmp_path, [(tmp_path / "w1", order[0]), (tmp_path / "w2", order[1])])
    assert "'t1/checkpoint' is nested under" in msg and "'t1'" in msg, msg
    assert "[[watch]] #1" in msg and "[[watch]] #2" in msg, msg


def test_every_overlap_is_reported_at_once(tmp_path: Path) -> None:
    msg = _refused(
        tmp_path,
        [(tmp_path / "registry", "x"), (tmp_path / "w", "t1"), (tmp_path / "w" / "in", "t1/c")],
    )
    assert len(msg.splitlines()) == 3, msg


def test_names_that_only_share_a_prefix_and_apart_paths_are_fine(tmp_path: Path) -> None:
    p = _toml(
        tmp_path,
        [(tmp_path / "w1", "t1"), (tmp_path / "w10", "t10"), (tmp_path / "w2", "t1-ckpt")],
    )
    assert len(load_config(p).watches) == 3
    # an S3 storage has no local directory to overlap
    p = _toml(tmp_path, [(tmp_path / "storage", "t1")], storage="s3://bucket/prefix")
    assert len(load_config(p).watches) == 1


def test_config_from_flags_refuses_a_watch_on_the_registry(tmp_path: Path) -> None:
    base = Config(
        daemon=DaemonConfig(state_dir=tmp_path / "state"),
        registry=RegistryConfig(path=tmp_path / "reg"),
        storage=StorageConfig(url=str(tmp_path / "store")),
    )
    with pytest.raises(ConfigError, match=r"\[registry\] path"):
        config_from_flags(tmp_path / "reg", "a/b", base=base)


def test_cpvd_check_names_both_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _toml(tmp_path, [(tmp_path / "state" / "x", "a/b")])
    assert main(["check", "--config", str(p)]) != 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "all checks passed" not in text
    assert str(tmp_path / "state" / "x") in text and "[daemon] state_dir" in text, text
