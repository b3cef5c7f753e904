"""Hints a newcomer follows in the first hour must name what the code really uses (issue 14)."""

from __future__ import annotations

import plistlib
import re
from pathlib import Path

import pytest

from cpvctl import errors
from cpvctl.client import Client

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "cpvd" / "service" / "units"


def test_not_running_hint_names_the_real_launchd_label_and_systemd_unit() -> None:
    plist = plistlib.loads((UNITS / "launchd" / "io.cpv.cpvd.plist").read_bytes())
    message = errors.unreachable("/x/cpvd.sock", FileNotFoundError(), 5).message
    kickstart = re.search(r"launchctl kickstart gui/\$\(id -u\)/(\S+?)\)", message)
    assert kickstart is not None, message
    assert kickstart[1] == plist["Label"]
    systemctl = re.search(r"systemctl --user start (\S+?);", message)
    assert systemctl is not None
    assert (UNITS / "systemd" / "user" / f"{systemctl[1]}.service").is_file()


def test_readme_socket_precedence_matches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPV_SOCKET", "/from/env.sock")
    assert Client("/from/flag.sock").socket_path == "/from/flag.sock"  # --socket wins
    assert Client().socket_path == "/from/env.sock"
    readme = " ".join(ROOT.joinpath("README.md").read_text().split())
    assert "The socket is `--socket`, else `$CPV_SOCKET`, else the platform runtime dir" in readme
