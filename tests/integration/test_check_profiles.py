"""``cpvd check`` on a config with two registries checks each one's storage (moto's S3
server), Git remote (bare repositories) and registry, and names the registry of a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.cli import main


def test_check_covers_every_registry_and_names_the_failing_one(
    short_tmp: Path,
    bare_remote: Path,
    moto_server: str,
    s3_bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (short_tmp / "wa").mkdir()
    (short_tmp / "wb").mkdir()
    config = short_tmp / "cpvd.toml"
    config.write_text(f"""
[[storage]]
name = "a"
url = "s3://{s3_bucket}/team-a"
endpoint_url = "{moto_server}"
[[storage]]
name = "b"
url = "s3://cpv-absent-bucket/team-b"
endpoint_url = "{moto_server}"
[[registry]]
name = "team-a"
path = "{short_tmp / "reg-a"}"
remote = "{bare_remote}"
storage = "a"
[[registry]]
name = "team-b"
path = "{short_tmp / "reg-b"}"
remote = "{short_tmp / "no-such-remote.git"}"
storage = "b"
[[watch]]
path = "{short_tmp / "wa"}"
artifact = "a/model"
registry = "team-a"
[[watch]]
path = "{short_tmp / "wb"}"
artifact = "b/model"
registry = "team-b"
""")
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(ln.startswith("ok    storage team-a:") for ln in lines), out
    assert any(ln.startswith("ok    git remote team-a:") for ln in lines), out
    assert any(ln.startswith("FAIL  storage team-b:") and "cpv-absent-bucket" in ln
               for ln in lines), out  # fmt: skip
    assert any(ln.startswith("FAIL  git remote team-b:") for ln in lines), out
    assert any(ln.startswith("ok    watch a/model") for ln in lines), out
    assert any(ln.startswith("ok    watch b/model") for ln in lines), out
