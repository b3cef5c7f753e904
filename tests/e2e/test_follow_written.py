"""Checkpoints hashed while their writer writes them (cpvd.pipeline.follow), through the
real daemon, real inotify and the local DVC remote.

The quiet period is set far longer than any test waits: a version appears only when the
writer's last act proved the checkpoint complete (cpvd.watch.proof). The daemon's log says
whether the copy followed while written was handed over ("hashed while written"); the
stored object must be exactly the file's bytes, also when the writer sought back and
rewrote its header after the body.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, versions_of, wait_for

ARTIFACT = "vision/follow"
#: far beyond every wait here: only a proven checkpoint can become a version in time
SETTLE = 600
MIB = 1024 * 1024


def safetensors(n: int) -> tuple[bytes, bytes]:
    """(header with its length prefix, body) of a valid safetensors file of ``n`` bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return struct.pack("<Q", len(header)) + header, os.urandom(n)


def torch_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # stored: like torch.save's archive
        z.writestr("archive/data.pkl", os.urandom(4096))
        z.writestr("archive/data/0", os.urandom(n))
    return buf.getvalue()


def write_slowly(f: io.BufferedWriter, data: bytes, step: int = 2 * MIB) -> None:
    """As a trainer does: in pieces, each reaching the file (and its events) before the next."""
    for i in range(0, len(data), step):
        f.write(data[i : i + step])
        f.flush()
        time.sleep(0.05)


def check_version(d: DaemonProcess, short_tmp: Path, name: str, data: bytes) -> None:
    """The version's md5 and stored object are the file's; pull gives its bytes back."""
    md5 = hashlib.md5(data).hexdigest()
    wait_for(lambda: versions_of(d, ARTIFACT) == ["v1.0.0"], timeout=90, what="v1.0.0")
    shown = d.client().show(f"{ARTIFACT}@v1.0.0")
    assert shown["md5"] == md5
    obj = d.root / "storage" / "files" / "md5" / md5[:2] / md5[2:]
    assert hashlib.md5(obj.read_bytes()).hexdigest() == md5
    got = d.client().pull(ARTIFACT, "v1.0.0", short_tmp / "out")
    assert Path(got).name == name
    assert Path(got).read_bytes() == data
    assert f"{name}: hashed while written" in d.log()


def daemon(short_tmp: Path, factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    return factory(watches=[Watch(short_tmp / "ck", ARTIFACT, settle_seconds=SETTLE)])


def test_temporary_name_renamed_when_whole(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon(short_tmp, daemon_factory)
    head, body = safetensors(20 * MIB)
    with d:
        tmp, final = short_tmp / "ck" / "x.safetensors.tmp", short_tmp / "ck" / "x.safetensors"
        with open(tmp, "wb") as f:
            write_slowly(f, head + body)
        os.rename(tmp, final)
        check_version(d, short_tmp, "x.safetensors", head + body)


def test_in_place_write_closed_once(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon(short_tmp, daemon_factory)
    data = torch_zip(20 * MIB)
    with d:
        with open(short_tmp / "ck" / "epoch-3.pt", "wb") as f:
            write_slowly(f, data)
        check_version(d, short_tmp, "epoch-3.pt", data)


def test_writer_that_seeks_back_and_rewrites_its_header(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon(short_tmp, daemon_factory)
    head, body = safetensors(20 * MIB)
    with d:
        tmp, final = short_tmp / "ck" / "m.safetensors.tmp", short_tmp / "ck" / "m.safetensors"
        with open(tmp, "wb") as f:
            write_slowly(f, b"\0" * len(head) + body)  # a placeholder header first
            time.sleep(1.0)  # the daemon has copied and hashed the placeholder by now
            f.seek(0)
            f.write(head)  # then the real one, over the bytes already hashed
        os.rename(tmp, final)
        check_version(d, short_tmp, "m.safetensors", head + body)
