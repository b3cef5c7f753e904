"""Issue 15 #11: ``cpvctl push <watch root>`` is refused (it would version the whole watch,
temporary and hidden files included); a checkpoint inside the watch is not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from cpvd.config.model import Config, WatchConfig
from cpvd.errors import InputError, NotFound
from cpvd.pipeline.intake import Intake


def _intake(cfg: Config) -> Intake:
    # submit refuses before it needs any of the pipeline's parts
    none = cast(Any, None)
    return Intake(lambda: cfg, none, none, none, none, none, none, none, none)


@pytest.mark.parametrize("form", ["plain", "trailing slash", "symlink alias"])
def test_push_of_the_watch_root_is_refused(tmp_path: Path, form: str) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    (root / ".tmp-x.part").write_bytes(b"half")
    intake = _intake(Config(watches=(WatchConfig(root, "a/b"),)))
    path = str(root)
    if form == "trailing slash":
        path += "/"
    elif form == "symlink alias":
        (tmp_path / "alias").symlink_to(root)
        path = str(tmp_path / "alias")
    with pytest.raises(InputError, match="inside it") as info:
        asyncio.run(intake.submit(path, "a/b", None, "minor"))
    assert info.value.code == "invalid_path"


def test_push_inside_the_watch_passes_the_root_check(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    intake = _intake(Config(watches=(WatchConfig(root, "a/b"),)))
    with pytest.raises(NotFound):  # got past the root check: the file is just not there
        asyncio.run(intake.submit(str(root / "epoch-1.pt"), "a/b", None, "minor"))
