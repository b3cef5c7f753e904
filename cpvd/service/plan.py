"""What ``cpvd service install|uninstall`` will do on this host, decided before anything runs.

An ML engineer should get a supervised daemon without reading systemd's manual, and see
exactly what was done to the machine. So every action is first a *plan* (files to write or
remove, commands to run) made by pure functions from the host's facts; ``--dry-run`` prints
it and :mod:`cpvd.service.install` carries it out. Nothing here spawns a process or writes.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpvd.service.units import (
    LAUNCHD_LABEL,
    LAUNCHD_PLIST,
    SYSTEM_TOML,
    SYSTEM_UNIT,
    UNIT_NAME,
    USER_UNIT,
    Mode,
    daemon_argv,
    launchd_log_file,
    render_launchd_plist,
    render_systemd_unit,
    template,
    unit_file,
)

if TYPE_CHECKING:
    from cpvd.config.model import Config

SERVICE_USER = "cpv"
SYSTEM_CONFIG = Path("/etc/cpv/cpvd.toml")
SYSTEM_STATE_DIR = Path("/var/lib/cpv")
#: systemctl/launchctl answer in well under a second...
COMMAND_TIMEOUT = 120.0
#: ...but `enable --now` waits for READY=1, up to the unit's TimeoutStartSec=300
START_TIMEOUT = 330.0

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ServiceError(Exception):
    """The request cannot be planned on this host (wrong platform, missing privileges)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# ---------------------------------------------------------------- facts about the host


@dataclass(frozen=True)
class Host:
    """What planning needs to know about the machine; :meth:`current` reads the real one."""

    platform: str  # "linux" | "darwin"
    uid: int
    home: Path
    env: Mapping[str, str]
    cpvd: tuple[str, ...]  # argv that starts the installed cpvd
    systemd: bool = False  # booted with systemd (sd_booted)
    service_user_exists: bool = True

    @classmethod
    def current(cls) -> Host:
        try:
            pwd.getpwnam(SERVICE_USER)
            user_exists = True
        except KeyError:
            user_exists = False
        return cls(
            platform=sys.platform,
            uid=os.geteuid(),
            home=Path.home(),
            env=dict(os.environ),
            cpvd=find_cpvd(sys.argv[0], shutil.which("cpvd"), sys.executable),
            systemd=Path("/run/systemd/system").is_dir(),
            service_user_exists=user_exists,
        )


def find_cpvd(argv0: str, which: str | None, executable: str) -> tuple[str, ...]:
    """The command that starts *this* installation of cpvd, as an absolute argv.

    The running script first (``/opt/cpv/bin/cpvd service install`` must install that one,
    not whichever cpvd is first on PATH), then PATH, then ``python -m cpvd`` with the running
    interpreter. The interpreter path is kept as is: resolving a venv's ``bin/python``
    symlink would leave the venv.
    """
    if argv0 and Path(argv0).name == "cpvd" and os.access(argv0, os.X_OK):
        return (str(Path(argv0).resolve()),)
    if which:
        return (str(Path(which).resolve()),)
    return (str(Path(executable).absolute()), "-m", "cpvd")


def resolve_mode(requested: str | None, platform: str, uid: int) -> Mode:
    """``--user``/``--system`` or the default: the system unit for root, else the user's."""
    if platform == "darwin":
        if requested == "system":
            raise ServiceError(
                "cpvd service: macOS runs cpvd as a LaunchAgent (per user); use --user"
            )
        return "launchd"
    if not platform.startswith("linux"):
        raise ServiceError(f"cpvd service: {platform} is not supported (Linux or macOS only)")
    if requested == "system":
        return "system"
    if requested == "user":
        return "user"
    if requested is not None:
        raise ServiceError(f"cpvd service: unknown mode {requested!r} (use --user or --system)")
    return "system" if uid == 0 else "user"


# ---------------------------------------------------------------- command argv (pure)


def systemctl_argv(mode: Mode, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if mode == "user" else []), *args]


def launchd_target(uid: int) -> str:
    return f"gui/{uid}/{LAUNCHD_LABEL}"


def useradd_argv() -> list[str]:
    """The ``cpv`` system user and its group (members of the group may use cpvctl)."""
    return [
        "useradd", "--system", "--user-group",
        "--home-dir", str(SYSTEM_STATE_DIR), "--no-create-home",
        "--shell", "/usr/sbin/nologin",
        "--comment", "CPV checkpoint versioning daemon",
        SERVICE_USER,
    ]  # fmt: skip


def status_argv(mode: Mode, uid: int) -> list[str]:
    if mode == "launchd":
        return ["launchctl", "print", launchd_target(uid)]
    return systemctl_argv(mode, "status", "--no-pager", "--lines=20", UNIT_NAME)


def log_commands(mode: Mode, home: Path) -> list[str]:
    """How to read the daemon's logs, for the user to copy."""
    if mode == "system":
        return ["journalctl -u cpvd -f"]
    if mode == "user":
        return ["journalctl --user -u cpvd -f"]
    return [
        f"tail -F {shlex.quote(str(launchd_log_file(home)))}",
        f"log show --last 1h --predicate 'eventMessage CONTAINS \"{LAUNCHD_LABEL}\"'"
        "   (launchd's own view: spawns, exits, throttling)",
    ]


def status_hint(mode: Mode, uid: int) -> str:
    """The short status command for people (``status_argv`` is the one cpvd runs)."""
    if mode == "launchd":
        return f"launchctl print {launchd_target(uid)}"
    return shlex.join(systemctl_argv(mode, "status", "cpvd"))


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class WriteFile:
    path: Path
    content: bytes
    mode: int = 0o644
    only_if_missing: bool = False


@dataclass(frozen=True)
class RemoveFile:
    path: Path


@dataclass(frozen=True)
class MakeDir:
    path: Path


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    #: a failure is expected and harmless (e.g. unloading a job that is not loaded)
    may_fail: bool = False
    timeout: float = COMMAND_TIMEOUT


Step = WriteFile | RemoveFile | MakeDir | Run


@dataclass(frozen=True)
class Plan:
    mode: Mode
    steps: tuple[Step, ...]
    #: the service manager is there to run ``Run`` steps; if not, they are only printed
    manager: bool
    notes: tuple[str, ...] = field(default=())


def plan_install(mode: Mode, host: Host, config: Path | None) -> Plan:
    """Files and commands that install and start the service."""
    target = unit_file(mode, host.home, host.env)
    if config is not None:
        config = config.expanduser().absolute()
    if mode == "launchd":
        log_file = launchd_log_file(host.home)
        content = render_launchd_plist(
            template(LAUNCHD_PLIST), daemon_argv(host.cpvd, config), log_file
        )
        steps: list[Step] = [
            MakeDir(log_file.parent),
            WriteFile(target, content),
            Run(("launchctl", "bootout", launchd_target(host.uid)), may_fail=True),
            Run(("launchctl", "enable", launchd_target(host.uid))),
            Run(("launchctl", "bootstrap", f"gui/{host.uid}", str(target))),
        ]
        return Plan(mode, tuple(steps), manager=True)

    steps = []
    notes: list[str] = []
    if mode == "system":
        if not host.service_user_exists:
            steps.append(Run(tuple(useradd_argv())))
        if config is None:
            config = SYSTEM_CONFIG
        if config.is_file():
            text = config.read_text(encoding="utf-8", errors="replace")
            notes += system_config_problems(text, config)
        elif config == SYSTEM_CONFIG:
            steps.append(WriteFile(SYSTEM_CONFIG, template(SYSTEM_TOML), only_if_missing=True))
        else:
            notes.append(f"warning: {config} does not exist yet: write it before the daemon starts")
        notes += executable_problems(host.cpvd[0])
        notes.append(
            f"to let someone use cpvctl: sudo usermod -aG {SERVICE_USER} NAME (then log in "
            "again) and export CPV_SOCKET=/run/cpv/cpvd.sock"
        )
        name = SYSTEM_UNIT
    else:
        name = USER_UNIT
        notes.append(
            "keep it running after you log out (and start it at boot): "
            'loginctl enable-linger "$USER"'
        )
    text = template(name).decode("utf-8")
    unit = render_systemd_unit(text, daemon_argv(host.cpvd, config))
    steps += [
        WriteFile(target, unit.encode("utf-8")),
        Run(tuple(systemctl_argv(mode, "daemon-reload"))),
        Run(tuple(systemctl_argv(mode, "enable", "--now", UNIT_NAME)), timeout=START_TIMEOUT),
    ]
    return Plan(mode, tuple(steps), manager=host.systemd, notes=tuple(notes))


def plan_uninstall(mode: Mode, host: Host) -> Plan:
    """Stop, disable and remove the service definition; data and config stay."""
    target = unit_file(mode, host.home, host.env)
    if mode == "launchd":
        steps: tuple[Step, ...] = (
            Run(("launchctl", "bootout", launchd_target(host.uid)), may_fail=True),
            RemoveFile(target),
        )
        logs = launchd_log_file(host.home).parent
        return Plan(mode, steps, manager=True, notes=(f"kept: the logs in {logs}",))
    steps = (
        Run(tuple(systemctl_argv(mode, "disable", "--now", UNIT_NAME)), may_fail=True),
        RemoveFile(target),
        Run(tuple(systemctl_argv(mode, "daemon-reload"))),
    )
    kept = (
        f"kept: {SYSTEM_CONFIG.parent}, {SYSTEM_STATE_DIR} (queue, registry, local storage) and "
        f"the {SERVICE_USER} user; remove them by hand if you no longer need the versions"
        if mode == "system"
        else "kept: your config, state and registry (the versions stay where they are)"
    )
    return Plan(mode, steps, manager=host.systemd, notes=(kept,))


def system_config_problems(text: str, source: Path) -> list[str]:
    """Where a config for the system unit disagrees with the unit's sandbox.

    The unit lets the daemon write only below /var/lib/cpv and puts the socket's directory at
    /run/cpv; a config pointing elsewhere would fail at run time with a read-only-filesystem
    error, so say it at install time, with the fix.
    """
    import tomllib
    import warnings

    from cpvd.config.load import parse_config
    from cpvd.errors import ConfigError

    try:
        with warnings.catch_warnings():
            # defaults are computed for whoever installs; the unit gives the daemon its own
            warnings.simplefilter("ignore")
            cfg = parse_config(text, source)
    except ConfigError as exc:
        return [f"warning: {exc.message}"]
    # Only keys the file sets: unset ones default, under the unit's environment
    # (HOME=/var/lib/cpv, CPV_SOCKET=/run/cpv/cpvd.sock), to places inside the sandbox.
    doc = tomllib.loads(text)
    daemon, registry, storage = (doc.get(t, {}) for t in ("daemon", "registry", "storage"))
    problems: list[str] = []
    runtime = Path("/run/cpv")
    if "socket" in daemon and cfg.daemon.socket.parent != runtime:
        problems.append(
            f"warning: {source}: [daemon] socket {cfg.daemon.socket} is not in {runtime} "
            "(the unit's RuntimeDirectory); cpvctl users will not find it there"
        )
    writable: list[tuple[str, Path]] = []
    if "state_dir" in daemon:
        writable.append(("[daemon] state_dir", cfg.daemon.state_dir))
    if "path" in registry:
        writable.append(("[registry] path", cfg.registry.path))
    if "url" in storage and not cfg.storage.is_s3:
        writable.append(("[storage] url", Path(cfg.storage.url)))
    writable += _profile_paths(doc, cfg)
    for key, path in writable:
        if not path.is_relative_to(SYSTEM_STATE_DIR):
            problems.append(
                f"warning: {source}: {key} {path} is outside {SYSTEM_STATE_DIR}, the only place "
                f"the unit may write; allow it with `systemctl edit cpvd`: "
                f"[Service] ReadWritePaths={path}"
            )
    if cfg.daemon.allow_group is None:
        problems.append(
            f"note: {source}: no [daemon] allow_group: only root and {SERVICE_USER} may use "
            f'cpvctl; set allow_group = "{SERVICE_USER}" to admit that group'
        )
    return problems


def executable_problems(program: str) -> list[str]:
    """Why the ``cpv`` user could not run ``program`` (e.g. a cpvd inside /root), if it can't.

    A check of the 'other' execute bits on the file and every directory above it: the service
    user is neither the owner nor, usually, in the owning group.
    """
    path = Path(program)
    problems: list[str] = []
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError:
            continue
        if not mode & stat.S_IXOTH:
            problems.append(
                f"warning: the {SERVICE_USER} user cannot execute {program}: {p} is not "
                "executable by others; install cpv somewhere shared (e.g. the Debian package "
                "under /opt/cpv, or `pipx install` as root with PIPX_HOME=/opt/pipx)"
            )
            break
    return problems


def _profile_paths(doc: dict[str, Any], cfg: Config) -> list[tuple[str, Path]]:
    """The directories ``[[registry]]`` and ``[[storage]]`` profiles set (several teams)."""
    out: list[tuple[str, Path]] = []
    raw_registries = doc.get("registry", []) if cfg.registries else []
    for raw, r in zip(raw_registries, cfg.registries, strict=True):
        if "path" in raw:
            out.append((f"[[registry]] {r.name} path", r.path))
    raw_storages = doc.get("storage", []) if cfg.storages else []
    for raw, st in zip(raw_storages, cfg.storages, strict=True):
        if "url" in raw and not st.is_s3:
            out.append((f"[[storage]] {st.name} url", Path(st.url)))
    return out
