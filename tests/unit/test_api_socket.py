"""The API socket's permissions from the first instant."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

from cpvd.api.server import bind_socket


def test_socket_is_0600_without_a_group(short_tmp: Path) -> None:
    sock = bind_socket(short_tmp / "a.sock")
    try:
        assert stat.S_IMODE(os.stat(short_tmp / "a.sock").st_mode) == 0o600
    finally:
        sock.close()


def test_unknown_group_keeps_0600(short_tmp: Path) -> None:
    sock = bind_socket(short_tmp / "b.sock", "no-such-group-cpv")
    try:
        assert stat.S_IMODE(os.stat(short_tmp / "b.sock").st_mode) == 0o600
    finally:
        sock.close()


def test_allow_group_makes_it_0660_owned_by_the_group(short_tmp: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    sock = bind_socket(short_tmp / "c.sock", group)
    try:
        st = os.stat(short_tmp / "c.sock")
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == os.getgid()
    finally:
        sock.close()
