"""``cpvd`` argv parsing through the real ``main`` (and once through a real process)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from cpvctl.protocol import CPV_VERSION
from cpvd.cli import main
from cpvd.config.model import Config


def test_version_through_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cpvd", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cpvd {CPV_VERSION}"


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cpvd {CPV_VERSION}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["run", "--watch", "/d"],  # no --artifact
        ["run", "--artifact", "a"],  # no --watch
        ["run", "--settle", "1"],
        ["run", "--watch", "/d", "--artifact", "a", "--kind", "weights"],
        ["run", "--log-level", "LOUD"],
        ["service", "install", "--user", "--system"],
        ["service", "restart"],
        ["init", "--kind", "x"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: cpvd" in capsys.readouterr().err


def test_check_with_bad_config_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "cpv.toml"
    bad.write_text('[storage]\nedpoint_url = "http://x"\n')
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: [storage] unknown key 'edpoint_url'" in err


def test_run_with_missing_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_run_with_bad_artifact_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--watch", "/d", "--artifact", "bad name"]) == 2
    assert "--artifact: invalid artifact name" in capsys.readouterr().err


class FakeDaemon:
    """Stands in for cpvd.daemon (another module) to see what `run` hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Config, str]] = []

    def run_daemon(self, cfg: Config, *, log_level: str, rebuild_queue: bool = False) -> int:
        self.calls.append((cfg, log_level))
        return 0


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    fake = FakeDaemon()
    mod = types.ModuleType("cpvd.daemon")
    mod.run_daemon = fake.run_daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cpvd.daemon", mod)
    return fake


def test_run_from_flags_passes_the_watch_and_log_level(
    tmp_path: Path, fake_daemon: FakeDaemon
) -> None:
    argv = [
        "run",
        "--watch",
        str(tmp_path),
        "--artifact",
        "team/m",
        "--kind",
        "data",
        "--settle",
        "0.5",
        "--log-level",
        "debug",
    ]
    assert main(argv) == 0
    [(cfg, level)] = fake_daemon.calls
    assert level == "DEBUG"
    [w] = cfg.watches
    assert (w.path, w.artifact, w.kind, w.settle_seconds) == (tmp_path, "team/m", "data", 0.5)
    assert cfg.source is None


def test_run_with_config_file(tmp_path: Path, fake_daemon: FakeDaemon) -> None:
    p = tmp_path / "c.toml"
    p.write_text(f'[[watch]]\npath = "{tmp_path}"\nartifact = "a"\n')
    assert main(["run", "--config", str(p)]) == 0
    [(cfg, level)] = fake_daemon.calls
    assert level == "INFO"
    assert cfg.source == p
    assert cfg.watches[0].artifact == "a"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["service", "install"], ("install", None, None, False)),
        (["service", "status", "--user"], ("status", "user", None, False)),
        (
            ["service", "uninstall", "--system", "--config", "/etc/cpv.toml", "--dry-run"],
            ("uninstall", "system", Path("/etc/cpv.toml"), True),
        ),
    ],
)
def test_service_arguments_reach_service_command(
    argv: list[str], expected: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []

    def service_command(action: str, mode: str | None, config: Path | None, dry_run: bool) -> int:
        calls.append((action, mode, config, dry_run))
        return 3

    mod = types.ModuleType("cpvd.service.install")
    mod.service_command = service_command  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cpvd.service.install", mod)
    assert main(argv) == 3
    assert calls == [expected]
