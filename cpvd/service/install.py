"""``cpvd service install|uninstall|status``: carry out a plan, or ask the service manager.

The plan (:mod:`cpvd.service.plan`) says what to do; this module does it, step by step,
printing each step, and stops at the first failure. The only place a process is spawned is
:func:`run_command`. :func:`service_command` is the entry point ``cpvd/cli.py`` calls.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cpvd.service.plan import (
    COMMAND_TIMEOUT,
    EXIT_FAILED,
    EXIT_OK,
    Host,
    MakeDir,
    Plan,
    RemoveFile,
    ServiceError,
    WriteFile,
    log_commands,
    plan_install,
    plan_uninstall,
    resolve_mode,
    status_argv,
    status_hint,
)
from cpvd.service.units import unit_file


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
