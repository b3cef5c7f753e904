"""Service files and ``cpvd service``: the units as systemd reads them, plans, argv, execution.

systemd is not running in the test environment, so nothing here starts a unit; what systemd
*would* do is checked with ``systemd-analyze verify`` (the real parser) and the install is
carried out for real into temporary directories with the service-manager steps skipped.
"""

from __future__ import annotations

import dataclasses
import io
import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from cpvd.config import paths
from cpvd.config.load import parse_config
from cpvd.config.model import DaemonConfig
from cpvd.service.install import CommandResult, Runner, run_action, run_command, service_command
from cpvd.service.plan import (
    SYSTEM_CONFIG,
    Host,
    Plan,
    RemoveFile,
    Run,
    ServiceError,
    WriteFile,
    executable_problems,
    find_cpvd,
    log_commands,
    plan_install,
    plan_uninstall,
    resolve_mode,
    status_argv,
    system_config_problems,
    systemctl_argv,
    useradd_argv,
)
from cpvd.service.units import (
    LAUNCHD_LABEL,
    SYSTEM_TOML,
    SYSTEM_UNIT,
    SYSTEM_UNIT_FILE,
    USER_UNIT,
    daemon_argv,
    render_systemd_unit,
    systemd_quote,
    template,
)

REPO = Path(__file__).resolve().parents[2]
SERVICE_DIR = REPO / "service"
#: the field's default, read without building a DaemonConfig (whose socket default needs a
#: runtime dir)
DRAIN = float(
    next(f.default for f in dataclasses.fields(DaemonConfig) if f.name == "drain_timeout")  # type: ignore[arg-type]
)
CPVD = "/opt/cpv/bin/cpvd"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each key possibly repeated."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def seconds(value: str) -> float:
    """systemd time spans used in our units: ``45``, ``45s``, ``2min``, ``1min 30s``."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def host(tmp: Path, **kw: object) -> Host:
    defaults: dict[str, object] = {
        "platform": "linux",
        "uid": 1000,
        "home": tmp / "home",
        "env": {"XDG_CONFIG_HOME": str(tmp / "config")},
        "cpvd": (CPVD,),
        "systemd": True,
        "service_user_exists": True,
    }
    defaults.update(kw)
    return Host(**defaults)  # type: ignore[arg-type]


def written(plan: Plan) -> dict[Path, bytes]:
    return {s.path: s.content for s in plan.steps if isinstance(s, WriteFile)}


def commands(plan: Plan) -> list[list[str]]:
    return [list(s.argv) for s in plan.steps if isinstance(s, Run)]


@pytest.fixture(scope="module")
def system_unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit((SERVICE_DIR / "systemd/system/cpvd.service").read_text())


@pytest.fixture(scope="module")
def user_unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit((SERVICE_DIR / "systemd/user/cpvd.service").read_text())


# ---------------------------------------------------------------- the files themselves


@pytest.mark.parametrize("unit", ["system_unit", "user_unit"])
def test_supervision_keys(unit: str, request: pytest.FixtureRequest) -> None:
    u = request.getfixturevalue(unit)
    assert one(u, "Service", "Type") == "notify"
    assert one(u, "Service", "NotifyAccess") == "main"
    assert one(u, "Service", "Restart") == "on-failure"
    assert seconds(one(u, "Unit", "StartLimitIntervalSec")) > 0
    assert int(one(u, "Unit", "StartLimitBurst")) >= 1
    assert seconds(one(u, "Service", "WatchdogSec")) > 0
    assert one(u, "Service", "KillMode") == "control-group"
    assert seconds(one(u, "Service", "TimeoutStopSec")) >= DRAIN + 10, "must outlast the drain"
    assert one(u, "Service", "RuntimeDirectory") == "cpv"
    assert one(u, "Service", "StateDirectory") == "cpv"
    assert one(u, "Service", "NoNewPrivileges") == "yes"
    assert one(u, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID", "SIGHUP reloads"
    assert one(u, "Service", "ExecStart").split()[1:] == [
        "run",
        *(["--config", "/etc/cpv/cpvd.toml"] if unit == "system_unit" else []),
    ]


@pytest.mark.parametrize("unit", ["system_unit", "user_unit"])
def test_units_run_below_the_trainer(unit: str, request: pytest.FixtureRequest) -> None:
    """Issue 18: the daemon yields CPU and disk to the training job beside it."""
    u = request.getfixturevalue(unit)
    assert 0 < int(one(u, "Service", "Nice")) <= 19
    assert one(u, "Service", "IOSchedulingClass") == "best-effort"
    assert int(one(u, "Service", "IOSchedulingPriority")) == 7, "the lowest best-effort level"
    assert int(one(u, "Service", "CPUWeight")) < 100, "below the default weight"
    assert int(one(u, "Service", "IOWeight")) < 100


def test_system_unit_sandbox(system_unit: dict[str, dict[str, list[str]]]) -> None:
    u = system_unit
    assert one(u, "Service", "User") == "cpv"
    assert one(u, "Service", "Group") == "cpv"
    assert one(u, "Service", "ProtectSystem") == "strict"
    assert "/var/lib/cpv" in one(u, "Service", "ReadWritePaths").split()
    assert one(u, "Service", "PrivateTmp") == "yes"
    assert one(u, "Service", "ProtectHome") == "read-only"
    # 0750, not 0700: members of group cpv must traverse /run/cpv to reach the socket;
    # the daemon only requires that nobody but its user can write there.
    assert one(u, "Service", "RuntimeDirectoryMode") == "0750"
    assert one(u, "Install", "WantedBy") == "multi-user.target"


def test_user_unit_is_private(user_unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(user_unit, "Service", "RuntimeDirectoryMode") == "0700"
    assert "User" not in user_unit["Service"]
    assert one(user_unit, "Install", "WantedBy") == "default.target"


def test_launchd_plist() -> None:
    plist = plistlib.loads((SERVICE_DIR / "launchd/io.cpv.cpvd.plist").read_bytes())
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"][1:] == ["run"], "foreground daemon, no forking flags"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] > 0
    assert plist["ExitTimeOut"] >= DRAIN + 10
    assert plist["StandardOutPath"] and plist["StandardErrorPath"]
    assert plist["ProcessType"] == "Background", "throttled below the user's own work"
    assert plist["LowPriorityIO"] is True
    assert 0 < plist["Nice"] <= 19


def test_system_config_agrees_with_the_unit(system_unit: dict[str, dict[str, list[str]]]) -> None:
    path = SERVICE_DIR / "systemd/system/cpvd.toml"
    text = path.read_text()
    cfg = parse_config(text, path)
    u = system_unit
    runtime = Path("/run") / one(u, "Service", "RuntimeDirectory")
    state = Path("/var/lib") / one(u, "Service", "StateDirectory")
    assert cfg.daemon.socket == runtime / "cpvd.sock"
    assert f"CPV_SOCKET={cfg.daemon.socket}" in u["Service"]["Environment"]
    assert cfg.daemon.state_dir == state
    assert cfg.daemon.allow_group == one(u, "Service", "Group")
    writable = [Path(p) for p in one(u, "Service", "ReadWritePaths").split()]
    for p in (cfg.daemon.state_dir, cfg.registry.path, Path(cfg.storage.url)):
        assert any(p.is_relative_to(w) for w in writable), p
    assert cfg.registry.path == Path("/var/lib/cpv/registry")
    assert system_config_problems(text, path) == []


def test_user_unit_directories_are_the_daemon_defaults(
    user_unit: dict[str, dict[str, list[str]]], short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's user manager puts RuntimeDirectory= under $XDG_RUNTIME_DIR and
    StateDirectory= under $XDG_STATE_HOME (default ~/.local/state): where cpvd looks."""
    runtime = short_tmp / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("HOME", str(short_tmp))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    rd = one(user_unit, "Service", "RuntimeDirectory")
    sd = one(user_unit, "Service", "StateDirectory")
    assert paths.default_socket() == runtime / rd / "cpvd.sock"
    assert paths.default_state_dir() == short_tmp / ".local/state" / sd
    monkeypatch.setenv("XDG_STATE_HOME", str(short_tmp / "st"))
    assert paths.default_state_dir() == short_tmp / "st" / sd


# ---------------------------------------------------------------- systemd-analyze verify

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def verify(unit_text: str, where: Path, user: bool, rc: int = 0) -> str:
    """``systemd-analyze verify`` output (it exits 0 even on bad keys, so output must be empty)."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / "cpvd.service"
    path.write_text(unit_text)
    runtime = where / "xdg-run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    argv = [str(ANALYZE), *(["--user"] if user else []), "verify", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == rc, done.stderr
    return (done.stdout + done.stderr).strip()


@needs_analyze
@pytest.mark.parametrize(("name", "user"), [(SYSTEM_UNIT, False), (USER_UNIT, True)])
def test_systemd_analyze_accepts_rendered_units(name: str, user: bool, short_tmp: Path) -> None:
    # verify checks that ExecStart exists: render with a program that does
    text = render_systemd_unit(template(name).decode(), [sys.executable, "-m", "cpvd", "run"])
    assert verify(text, short_tmp, user) == ""


@needs_analyze
def test_systemd_analyze_check_can_fail(short_tmp: Path) -> None:
    text = render_systemd_unit(template(SYSTEM_UNIT).decode(), ["/bin/true"])
    broken = text.replace("WatchdogSec=60", "WatchdogSec=sixty")
    assert "sixty" in verify(broken, short_tmp, False)


@needs_analyze
def test_exec_start_quoting_survives_systemd(short_tmp: Path) -> None:
    """A cpvd under a path with a blank, % and $ is the program systemd will run."""
    odd = short_tmp / "my venv %i $HOME" / "bin"
    odd.mkdir(parents=True)
    program = odd / "cpvd"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    text = render_systemd_unit(
        template(SYSTEM_UNIT).decode(),
        daemon_argv((str(program),), Path("/etc/cpv/a b.toml")),
    )
    assert verify(text, short_tmp / "v", False) == ""
    program.unlink()  # the same unit must now fail on the (correctly unquoted) missing path
    assert f"Command {program} is not executable" in verify(text, short_tmp / "v", False, rc=1)


# ---------------------------------------------------------------- pure pieces


def test_systemd_quote() -> None:
    assert systemd_quote("/opt/cpv/bin/cpvd") == "/opt/cpv/bin/cpvd"
    assert systemd_quote("/a b/cpvd") == '"/a b/cpvd"'
    assert systemd_quote("/x%i$y") == "/x%%i$$y"
    assert systemd_quote("/x%i$y", program=True) == "/x%%i$y"
    assert systemd_quote('a"b\\c') == '"a\\"b\\\\c"'


def test_render_replaces_only_exec_start() -> None:
    text = "[Service]\nType=notify\nExecStart=/old run\nRestart=on-failure\n"
    assert render_systemd_unit(text, ["/new/cpvd", "run"]) == (
        "[Service]\nType=notify\nExecStart=/new/cpvd run\nRestart=on-failure\n"
    )
    with pytest.raises(ValueError):
        render_systemd_unit("[Service]\nType=notify\n", ["/x"])


def test_find_cpvd(short_tmp: Path) -> None:
    script = short_tmp / "bin" / "cpvd"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    link = short_tmp / "cpvd"
    link.symlink_to(script)
    # the running script wins over PATH, symlinks resolved (pipx's ~/.local/bin/cpvd)
    assert find_cpvd(str(link), "/usr/bin/cpvd", "/py") == (str(script),)
    # not run as the cpvd script (python -m cpvd, pytest): PATH
    assert find_cpvd("/x/pytest", str(link), "/py") == (str(script),)
    # nothing on PATH: the running interpreter, not resolved (a venv's python is a symlink)
    venv_py = short_tmp / "venv-python"
    venv_py.symlink_to(sys.executable)
    assert find_cpvd("-m", None, str(venv_py)) == (str(venv_py), "-m", "cpvd")


@pytest.mark.parametrize(
    ("requested", "platform", "uid", "mode"),
    [
        (None, "linux", 0, "system"),
        (None, "linux", 1000, "user"),
        ("user", "linux", 0, "user"),
        ("system", "linux", 1000, "system"),
        (None, "darwin", 501, "launchd"),
        ("user", "darwin", 501, "launchd"),
    ],
)
def test_resolve_mode(requested: str | None, platform: str, uid: int, mode: str) -> None:
    assert resolve_mode(requested, platform, uid) == mode


@pytest.mark.parametrize(("requested", "platform"), [("system", "darwin"), (None, "win32")])
def test_resolve_mode_refuses(requested: str | None, platform: str) -> None:
    with pytest.raises(ServiceError):
        resolve_mode(requested, platform, 0)


def test_argv_builders() -> None:
    assert systemctl_argv("user", "daemon-reload") == [
        "systemctl",
        "--user",
        "daemon-reload",
    ]
    assert systemctl_argv("system", "daemon-reload") == ["systemctl", "daemon-reload"]
    assert status_argv("user", 1000) == [
        "systemctl", "--user", "status", "--no-pager", "--lines=20", "cpvd.service",
    ]  # fmt: skip
    assert status_argv("launchd", 501) == ["launchctl", "print", "gui/501/io.cpv.cpvd"]
    assert useradd_argv() == [
        "useradd", "--system", "--user-group", "--home-dir", "/var/lib/cpv", "--no-create-home",
        "--shell", "/usr/sbin/nologin", "--comment", "CPV checkpoint versioning daemon", "cpv",
    ]  # fmt: skip
    assert log_commands("system", Path("/h")) == ["journalctl -u cpvd -f"]
    assert log_commands("user", Path("/h")) == ["journalctl --user -u cpvd -f"]
    assert log_commands("launchd", Path("/h"))[0] == "tail -F /h/Library/Logs/cpv/cpvd.log"


# ---------------------------------------------------------------- plans


def test_user_install_plan(tmp_path: Path) -> None:
    h = host(tmp_path)
    plan = plan_install("user", h, Path("rel/cpvd.toml"))
    target = tmp_path / "config/systemd/user/cpvd.service"
    unit = parse_unit(written(plan)[target].decode())
    assert one(unit, "Service", "ExecStart") == (
        f"{CPVD} run --config {Path('rel/cpvd.toml').absolute()}"
    )
    assert commands(plan) == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "cpvd.service"],
    ]


def test_system_install_plan_creates_user_and_default_config(tmp_path: Path) -> None:
    plan = plan_install("system", host(tmp_path, uid=0, service_user_exists=False), None)
    files = written(plan)
    unit = parse_unit(files[SYSTEM_UNIT_FILE].decode())
    assert one(unit, "Service", "ExecStart") == f"{CPVD} run --config /etc/cpv/cpvd.toml"
    if not SYSTEM_CONFIG.exists():
        assert files[SYSTEM_CONFIG] == template(SYSTEM_TOML)
    assert commands(plan) == [
        useradd_argv(),
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "cpvd.service"],
    ]


def test_system_install_warns_about_a_config_outside_the_sandbox(tmp_path: Path) -> None:
    config = tmp_path / "cpvd.toml"
    config.write_text('[daemon]\nstate_dir = "/srv/cpv"\nallow_group = "cpv"\n')
    plan = plan_install("system", host(tmp_path, uid=0), config)
    assert any("ReadWritePaths=/srv/cpv" in n for n in plan.notes)
    assert SYSTEM_CONFIG not in written(plan)
    config.write_text("[daemon\n")
    assert any("not valid TOML" in n for n in plan_install("system", host(tmp_path), config).notes)


def test_executable_problems(short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    private = short_tmp / "private"
    private.mkdir(mode=0o700)
    (private / "cpvd").write_text("")
    (private / "cpvd").chmod(0o755)
    assert "private is not executable by others" in executable_problems(str(private / "cpvd"))[0]
    private.chmod(0o755)
    assert executable_problems(str(private / "cpvd")) == []


def test_launchd_plan(tmp_path: Path) -> None:
    h = host(tmp_path, platform="darwin", uid=501)
    plan = plan_install("launchd", h, Path("/etc/c.toml"))
    target = tmp_path / "home/Library/LaunchAgents/io.cpv.cpvd.plist"
    plist = plistlib.loads(written(plan)[target])
    assert plist["ProgramArguments"] == [CPVD, "run", "--config", "/etc/c.toml"]
    log = str(tmp_path / "home/Library/Logs/cpv/cpvd.log")
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == log
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert commands(plan) == [
        ["launchctl", "bootout", "gui/501/io.cpv.cpvd"],
        ["launchctl", "enable", "gui/501/io.cpv.cpvd"],
        ["launchctl", "bootstrap", "gui/501", str(target)],
    ]
    assert commands(plan_uninstall("launchd", h)) == [
        ["launchctl", "bootout", "gui/501/io.cpv.cpvd"]
    ]


def test_uninstall_plan(tmp_path: Path) -> None:
    plan = plan_uninstall("system", host(tmp_path, uid=0))
    assert commands(plan) == [
        ["systemctl", "disable", "--now", "cpvd.service"],
        ["systemctl", "daemon-reload"],
    ]
    assert [s.path for s in plan.steps if isinstance(s, RemoveFile)] == [SYSTEM_UNIT_FILE]


# ---------------------------------------------------------------- the command


def run(
    h: Host,
    action: str,
    mode: str | None,
    dry_run: bool,
    config: Path | None = None,
    runner: Runner = run_command,
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_action(action, mode, config, dry_run, h, out, err, runner)
    return code, out.getvalue(), err.getvalue()


def test_dry_run_prints_and_touches_nothing(tmp_path: Path) -> None:
    h = host(tmp_path)
    code, out, _ = run(h, "install", "user", True)
    assert code == 0
    assert f"ExecStart={CPVD} run\n" in out
    assert "would run: systemctl --user enable --now cpvd.service" in out
    assert "journalctl --user -u cpvd -f" in out
    assert list(tmp_path.iterdir()) == []


def test_install_and_uninstall_for_real_without_systemd(tmp_path: Path) -> None:
    """No systemd here: the unit is written, the systemctl steps skipped, and it says so."""
    h = host(tmp_path, systemd=False)
    target = tmp_path / "config/systemd/user/cpvd.service"
    code, out, err = run(h, "install", "user", False)
    assert code == 1
    assert f"wrote {target}" in out
    assert "skipped: systemctl --user enable --now cpvd.service" in out
    assert "systemd is not running" in err
    assert target.stat().st_mode & 0o777 == 0o644
    assert f"ExecStart={CPVD} run\n" in target.read_text()
    code, out, _ = run(h, "install", "user", False)
    assert f"replaced {target}" in out
    code, out, _ = run(h, "uninstall", "user", False)
    assert f"removed {target}" in out
    assert not target.exists()


def test_execution_order_and_failure(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        assert timeout >= (300 if "--now" in argv else 10)
        calls.append(list(argv))
        if list(argv[-2:]) == ["--now", "cpvd.service"]:
            return CommandResult(1, "Failed to connect to bus\n")
        return CommandResult(0, "")

    code, _, err = run(host(tmp_path), "install", "user", False, runner=runner)
    assert code == 1
    assert calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "cpvd.service"],
    ]
    assert "Failed to connect to bus" in err
    assert "enable-linger" in err
    calls.clear()

    def not_loaded(argv: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(argv))
        return CommandResult(5 if "disable" in argv else 0, "Unit cpvd.service not loaded.\n")

    code, _, _ = run(host(tmp_path), "uninstall", "user", False, runner=not_loaded)
    assert code == 0, "disabling a unit that is not loaded is fine"
    assert calls[-1] == ["systemctl", "--user", "daemon-reload"]


def test_refusals(tmp_path: Path) -> None:
    code, _, err = run(host(tmp_path, uid=1000), "install", "system", False)
    assert code == 1 and "sudo" in err
    code, _, err = run(host(tmp_path, platform="darwin"), "install", "system", True)
    assert code == 2 and "LaunchAgent" in err
    assert run(host(tmp_path), "restart", "user", True)[0] == 2
    assert list(tmp_path.iterdir()) == []


def test_status(tmp_path: Path) -> None:
    code, out, _ = run(host(tmp_path), "status", "user", True)
    assert code == 0
    assert out == "would run: systemctl --user status --no-pager --lines=20 cpvd.service\n"
    code, out, _ = run(
        host(tmp_path), "status", "user", False, runner=lambda a, t: CommandResult(3, "inactive\n")
    )
    assert code == 1
    assert "cpvd.service: not installed" in out and "inactive" in out


def test_run_command_is_bounded() -> None:
    assert run_command(["true"]) == CommandResult(0, "")
    assert run_command(["sh", "-c", "echo out; echo err >&2; exit 3"]) == CommandResult(
        3, "out\nerr\n"
    )
    assert run_command(["/nonexistent/systemctl"]).returncode == 127
    timed_out = run_command(["sleep", "30"], timeout=0.2)
    assert timed_out.returncode == 124 and "no answer" in timed_out.output


def test_service_command_renders_the_installed_cpvd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real entry point, as cli.py calls it: ExecStart is the cpvd on PATH, resolved."""
    installed = shutil.which("cpvd", path=str(Path(sys.executable).parent))
    if installed is None:
        pytest.skip("cpvd console script not installed (pip install -e .)")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert service_command("install", "user", None, True) == 0
    out = capsys.readouterr().out
    assert f"ExecStart={Path(installed).resolve()} run\n" in out
    assert not (tmp_path / "cfg").exists()


def test_cli_dry_run(tmp_path: Path) -> None:
    """``cpvd service install --dry-run`` through the real console script."""
    script = Path(sys.executable).parent / "cpvd"
    if not script.exists():
        pytest.skip("cpvd console script not installed (pip install -e .)")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    done = subprocess.run(
        [str(script), "service", "install", "--user", "--dry-run", "--config", "c.toml"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit = parse_unit(done.stdout.split(" (mode 0644):\n", 1)[1].split("would run:")[0])
    assert one(unit, "Service", "ExecStart") == (
        f"{script.resolve()} run --config {tmp_path / 'c.toml'}"
    )
    assert not (tmp_path / "cfg").exists()


def test_system_install_warns_about_profile_paths_outside_the_sandbox(tmp_path: Path) -> None:
    config = tmp_path / "cpvd.toml"
    config.write_text(
        '[daemon]\nallow_group = "cpv"\n'
        '[[storage]]\nname = "a"\nurl = "/srv/store-a"\n'
        '[[storage]]\nname = "b"\nurl = "s3://bucket-b/ckpt"\n'
        '[[registry]]\nname = "ta"\npath = "/srv/reg-a"\nstorage = "a"\n'
        '[[registry]]\nname = "tb"\npath = "/var/lib/cpv/reg-b"\nstorage = "b"\n'
    )
    notes = plan_install("system", host(tmp_path, uid=0), config).notes
    assert any("[[registry]] ta path /srv/reg-a" in n and "ReadWritePaths=/srv/reg-a" in n
               for n in notes), notes  # fmt: skip
    assert any("[[storage]] a url /srv/store-a" in n for n in notes), notes
    assert not any("reg-b" in n or "bucket-b" in n for n in notes), notes
