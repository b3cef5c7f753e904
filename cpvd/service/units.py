"""The service definitions cpvd ships, and how they are rendered for this installation.

The files live once, in ``cpvd/service/units/`` (the repository's top-level ``service/`` is a
symlink to it), laid out as systemd and launchd expect them; the wheel ships the same tree as
package data, so an installed cpvd reads them with :mod:`importlib.resources`. Rendering
rewrites only ``ExecStart=`` (systemd) or ``ProgramArguments`` and the log paths (launchd) to
the real installed cpvd: everything else is the file as reviewed in the repository.
"""

from __future__ import annotations

import plistlib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

Mode = Literal["system", "user", "launchd"]

UNIT_NAME = "cpvd.service"
LAUNCHD_LABEL = "io.cpv.cpvd"
SYSTEM_UNIT_FILE = Path("/etc/systemd/system") / UNIT_NAME

#: the shipped files, relative to ``cpvd/service/units/``
SYSTEM_UNIT = "systemd/system/cpvd.service"
SYSTEM_TOML = "systemd/system/cpvd.toml"
USER_UNIT = "systemd/user/cpvd.service"
LAUNCHD_PLIST = f"launchd/{LAUNCHD_LABEL}.plist"


def template(relpath: str) -> bytes:
    """A shipped service file, e.g. ``template(SYSTEM_UNIT)``."""
    node = resources.files("cpvd.service").joinpath("units")
    for part in relpath.split("/"):
        node = node.joinpath(part)
    return node.read_bytes()


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
