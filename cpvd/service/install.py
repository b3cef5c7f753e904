"""``cpvd service install|uninstall|status``: run cpvd under systemd (Linux) or launchd (macOS).

Why it is built this way: an ML engineer should get a supervised daemon without reading
systemd's manual, and see exactly what was done to the machine. So every action is first a
*plan* (files to write or remove, commands to run) made by pure functions from the host's
facts; ``--dry-run`` prints the plan, otherwise it is carried out step by step and each step
is printed. The only place a process is spawned is :func:`run_command`.

The unit files are the ones in the repository's ``service/`` folder, shipped byte for byte as
``cpvd/service_files/`` (a test keeps the two equal); installing rewrites only ``ExecStart=``
(systemd) or ``ProgramArguments`` and the log paths (launchd) to the real installed cpvd.
"""

from __future__ import annotations

import os
import plistlib
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, TextIO

Mode = Literal["system", "user", "launchd"]

UNIT_NAME = "cpvd.service"
LAUNCHD_LABEL = "io.cpv.cpvd"
SERVICE_USER = "cpv"
SYSTEM_CONFIG = Path("/etc/cpv/cpvd.toml")
SYSTEM_UNIT_FILE = Path("/etc/systemd/system") / UNIT_NAME
SYSTEM_STATE_DIR = Path("/var/lib/cpv")
#: systemctl/launchctl answer in well under a second...
COMMAND_TIMEOUT = 120.0
#: ...but `enable --now` waits for READY=1, up to the unit's TimeoutStartSec=300
START_TIMEOUT = 330.0

#: packaged template name -> canonical file under the repository's service/ folder
TEMPLATES: dict[str, str] = {
    "cpvd-system.service": "systemd/system/cpvd.service",
    "cpvd-system.toml": "systemd/system/cpvd.toml",
    "cpvd-user.service": "systemd/user/cpvd.service",
    "io.cpv.cpvd.plist": "launchd/io.cpv.cpvd.plist",
}

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


# ---------------------------------------------------------------- rendering (pure)


def template(name: str) -> bytes:
    """A packaged service file (``cpvd/service_files/<name>``)."""
    return resources.files("cpvd").joinpath("service_files", name).read_bytes()


def daemon_argv(cpvd: Sequence[str], config: Path | None) -> list[str]:
    """What the service manager runs: the foreground daemon."""
    argv = [*cpvd, "run"]
    if config is not None:
        argv += ["--config", str(config)]
    return argv


def systemd_quote(arg: str, *, program: bool = False) -> str:
    """One ExecStart word, quoted when it holds blanks or quotes.

    ``%`` (specifiers) is doubled everywhere; ``$`` (variable expansion) only in arguments:
    systemd does not expand variables in the program path and would keep ``$$`` literally.
    """
    word = arg.replace("%", "%%")
    if not program:
        word = word.replace("$", "$$")
    if word and not any(c in word for c in " \t\n\"'\\;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd_unit(text: str, argv: Sequence[str]) -> str:
    """The unit with its one ``ExecStart=`` line replaced by ``argv``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    if len(hits) != 1:
        raise ValueError(f"expected one ExecStart= line in the unit, found {len(hits)}")
    words = [systemd_quote(a, program=i == 0) for i, a in enumerate(argv)]
    lines[hits[0]] = "ExecStart=" + " ".join(words) + "\n"
    return "".join(lines)


def render_launchd_plist(data: bytes, argv: Sequence[str], log_file: Path) -> bytes:
    """The LaunchAgent with the real program and a per-user log file (launchd expands no ~)."""
    plist = plistlib.loads(data)
    plist["ProgramArguments"] = list(argv)
    plist["StandardOutPath"] = str(log_file)
    plist["StandardErrorPath"] = str(log_file)
    return plistlib.dumps(plist)


def unit_file(mode: Mode, home: Path, env: Mapping[str, str]) -> Path:
    """Where the service definition is installed."""
    if mode == "system":
        return SYSTEM_UNIT_FILE
    if mode == "user":
        config_home = env.get("XDG_CONFIG_HOME") or str(home / ".config")
        return Path(config_home) / "systemd" / "user" / UNIT_NAME
    return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def launchd_log_file(home: Path) -> Path:
    return home / "Library" / "Logs" / "cpv" / "cpvd.log"


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
            template("io.cpv.cpvd.plist"), daemon_argv(host.cpvd, config), log_file
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
            steps.append(
                WriteFile(SYSTEM_CONFIG, template("cpvd-system.toml"), only_if_missing=True)
            )
        else:
            notes.append(f"warning: {config} does not exist yet: write it before the daemon starts")
        notes += executable_problems(host.cpvd[0])
        notes.append(
            f"to let someone use cpvctl: sudo usermod -aG {SERVICE_USER} NAME (then log in "
            "again) and export CPV_SOCKET=/run/cpv/cpvd.sock"
        )
        name = "cpvd-system.service"
    else:
        name = "cpvd-user.service"
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


# ---------------------------------------------------------------- execution


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


def run_command(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """The one place this module spawns a process: no shell, a timeout, output captured."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return CommandResult(127, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
        return CommandResult(124, f"{out}{argv[0]}: no answer after {timeout:g} s")
    return CommandResult(done.returncode, done.stdout)


#: ``run_command``'s signature: (argv, timeout) -> result
Runner = Callable[[Sequence[str], float], CommandResult]


def _indent(text: str) -> str:
    return "".join(f"    {line}" for line in text.splitlines(keepends=True))


def describe(plan: Plan, out: TextIO) -> None:
    """The plan as text: every file in full and every command (``--dry-run``)."""
    for step in plan.steps:
        if isinstance(step, WriteFile):
            when = " (if missing)" if step.only_if_missing else ""
            print(f"would write {step.path}{when} (mode {step.mode:04o}):", file=out)
            print(_indent(step.content.decode("utf-8")), end="", file=out)
        elif isinstance(step, RemoveFile):
            print(f"would remove {step.path}", file=out)
        elif isinstance(step, MakeDir):
            print(f"would create {step.path}/", file=out)
        else:
            print(f"would run: {shlex.join(step.argv)}", file=out)


def _write(step: WriteFile) -> str:
    if step.only_if_missing and step.path.exists():
        return f"kept {step.path} (exists)"
    step.path.parent.mkdir(parents=True, exist_ok=True)
    existed = step.path.exists()
    tmp = step.path.with_name(f".{step.path.name}.tmp")
    tmp.write_bytes(step.content)
    tmp.chmod(step.mode)
    tmp.replace(step.path)
    return f"{'replaced' if existed else 'wrote'} {step.path}"


def execute(plan: Plan, out: TextIO, err: TextIO, runner: Runner = run_command) -> int:
    """Carry out the plan in order; stop at the first step that fails."""
    for step in plan.steps:
        if isinstance(step, WriteFile):
            print(_write(step), file=out)
        elif isinstance(step, RemoveFile):
            if step.path.exists():
                step.path.unlink()
                print(f"removed {step.path}", file=out)
            else:
                print(f"{step.path} was not installed", file=out)
        elif isinstance(step, MakeDir):
            step.path.mkdir(parents=True, exist_ok=True)
        elif not plan.manager:
            print(f"skipped: {shlex.join(step.argv)}", file=out)
        else:
            result = runner(step.argv, step.timeout)
            if result.returncode != 0 and not step.may_fail:
                print(f"failed ({result.returncode}): {shlex.join(step.argv)}", file=err)
                print(_indent(result.output), end="", file=err)
                if plan.mode == "user":
                    print(
                        "  (is a user systemd running? log in graphically or over ssh rather "
                        "than `su`, or enable lingering: loginctl enable-linger $USER)",
                        file=err,
                    )
                return EXIT_FAILED
            print(f"ran: {shlex.join(step.argv)}", file=out)
    if not plan.manager:
        print(
            "systemd is not running on this machine: the unit was written but not started; "
            "run the commands above where systemd runs, or start `cpvd run` yourself",
            file=err,
        )
        return EXIT_FAILED
    return EXIT_OK


def status_hint(mode: Mode, uid: int) -> str:
    """The short status command for people (``status_argv`` is the one cpvd runs)."""
    if mode == "launchd":
        return f"launchctl print {launchd_target(uid)}"
    return shlex.join(systemctl_argv(mode, "status", "cpvd"))


def _print_footer(action: str, plan: Plan, host: Host, out: TextIO, dry_run: bool) -> None:
    kind = {"system": "systemd system", "user": "systemd user", "launchd": "launchd"}[plan.mode]
    if action == "install":
        if dry_run:
            print(f"(dry run: nothing was changed) then, as a {kind} service:", file=out)
        else:
            print(f"cpvd is installed as a {kind} service.", file=out)
        print(f"  status: {status_hint(plan.mode, host.uid)}", file=out)
        for line in log_commands(plan.mode, host.home):
            print(f"  logs:   {line}", file=out)
    elif dry_run:
        print("(dry run: nothing was changed)", file=out)
    for note in plan.notes:
        print(f"  {note}", file=out)


def run_action(
    action: str,
    mode: str | None,
    config: Path | None,
    dry_run: bool,
    host: Host,
    out: TextIO,
    err: TextIO,
    runner: Runner = run_command,
) -> int:
    """``service_command`` on an explicit host, streams and runner (what tests drive)."""
    try:
        resolved = resolve_mode(mode, host.platform, host.uid)
        if resolved == "system" and host.uid != 0 and not dry_run and action != "status":
            raise ServiceError(
                f"cpvd service {action} --system changes /etc and needs root: run it with sudo",
                EXIT_FAILED,
            )
        if action == "status":
            argv = status_argv(resolved, host.uid)
            if dry_run:
                print(f"would run: {shlex.join(argv)}", file=out)
                return EXIT_OK
            target = unit_file(resolved, host.home, host.env)
            print(f"{target}: {'installed' if target.exists() else 'not installed'}", file=out)
            result = runner(argv, COMMAND_TIMEOUT)
            print(result.output, end="", file=out)
            for line in log_commands(resolved, host.home):
                print(f"logs: {line}", file=out)
            return EXIT_OK if result.returncode == 0 else EXIT_FAILED
        if action == "install":
            plan = plan_install(resolved, host, config)
        elif action == "uninstall":
            plan = plan_uninstall(resolved, host)
        else:
            raise ServiceError(f"cpvd service: unknown action {action!r}")
    except ServiceError as exc:
        print(exc.message, file=err)
        return exc.exit_code
    if dry_run:
        describe(plan, out)
        _print_footer(action, plan, host, out, dry_run=True)
        return EXIT_OK
    try:
        code = execute(plan, out, err, runner)
    except OSError as exc:
        print(f"cpvd service {action}: {exc}", file=err)
        return EXIT_FAILED
    if code == EXIT_OK:
        _print_footer(action, plan, host, out, dry_run=False)
    return code


def service_command(action: str, mode: str | None, config: Path | None, dry_run: bool) -> int:
    """Entry point of ``cpvd service install|uninstall|status``; returns the exit code."""
    return run_action(action, mode, config, dry_run, Host.current(), sys.stdout, sys.stderr)
