"""``cpvd check`` on a config without a watch says nothing will be versioned (issue 14):
``cpvctl push`` too refuses every path outside a watch, so "only push" was wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.cli import main


def test_check_without_watch_says_nothing_will_be_versioned(
    short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = short_tmp / "cpvd.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{short_tmp / "state"}"\n'
        f'[registry]\npath = "{short_tmp / "registry"}"\n'
        f'[storage]\nurl = "{short_tmp / "storage"}"\n'
    )
    assert main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "only `cpvctl push` will create versions" not in out
    assert "nothing will be versioned" in out and "add a [[watch]]" in out
