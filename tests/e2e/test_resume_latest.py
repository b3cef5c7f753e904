"""Resume after preemption through the real daemon (DESIGN.md "References"): pull by
``@latest``, ``#STAGE``, a bare name and ``@v1.1``; ``@latest`` skips a version the remote
refused; a second daemon on a fresh machine (only the registry remote and the storage
configured) clones the registry and pulls ``@latest`` byte for byte."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cpvctl.client import Client
from cpvctl.errors import NotFound
from tests.e2e.harness import DaemonProcess, Watch, cpvctl, tags, wait_for
from tests.integration.engine_helpers import BIN

ART = "vision/r50"
OTHER = "vision/other"
#: gto orders stage tags by their time, in whole seconds (cpvd by the counter N): tags a
#: second apart keep ``gto show`` from seeing a tie it breaks at random
GTO_TICK = 1.1
BYTES = [b"epoch one " * 500, b"epoch two " * 600, b"epoch three " * 700]


def versions(d: DaemonProcess, artifact: str) -> list[str]:
    return [v["version"] for v in d.client().versions(artifact)]


def pulled(sock: Path, ref: str, out: Path) -> Path:
    """``cpvctl pull REF -o OUT``: the restored checkpoint's path is the first word printed."""
    proc = cpvctl(sock, "pull", ref, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.split()[0])


def gto_show(registry: Path, ref: str) -> str:
    out = subprocess.run(
        [str(BIN / "gto"), "show", ref, "--json"],
        cwd=registry,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)[0]["version"])


def refuse_pushes(remote: Path, refuse: bool) -> None:
    hook = remote / "hooks" / "pre-receive"
    if refuse:
        hook.write_text("#!/bin/sh\necho 'registry closed for maintenance' >&2\nexit 1\n")
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    else:
        hook.unlink()


def test_pull_by_reference_and_resume_on_a_fresh_machine(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck, other = short_tmp / "ck", short_tmp / "other"
    storage = str(short_tmp / "storage")
    a = daemon_factory(
        name="a",
        watches=[Watch(ck, ART), Watch(other, OTHER)],
        remote=bare_remote,
        storage_url=storage,
        extra_daemon={"retry_max_seconds": 1},
    )
    with a:
        for i, data in enumerate(BYTES):
            (ck / f"epoch-{i}.bin").write_bytes(data)
            wait_for(lambda i=i: len(versions(a, ART)) == i + 1, what=f"version {i + 1}")
        wait_for(lambda: len(tags(bare_remote)) == 3, what="three tags on the remote")
        sock = a.socket
        for ref in (f"{ART}@v1.0", f"{ART}@v1.1"):  # a stage moved: v1.0, then v1.1
            assert cpvctl(sock, "promote", ref, "prod").returncode == 0
            time.sleep(GTO_TICK)
        assert cpvctl(sock, "promote", f"{ART}@latest", "best").returncode == 0

        out = short_tmp / "out"
        assert pulled(sock, f"{ART}@latest", out / "l").read_bytes() == BYTES[2]
        assert pulled(sock, f"{ART}#prod", out / "p").read_bytes() == BYTES[1]
        assert pulled(sock, f"{ART}#best", out / "b").read_bytes() == BYTES[2]
        assert pulled(sock, f"{ART}@v1.1", out / "v").read_bytes() == BYTES[1]
        assert pulled(sock, ART, out / "c").read_bytes() == BYTES[2]
        # revert by stage: the bare name follows it, @latest does not
        assert cpvctl(sock, "revert", f"{ART}#prod").returncode == 0
        assert pulled(sock, ART, out / "c2").read_bytes() == BYTES[1]
        assert pulled(sock, f"{ART}@latest", out / "l2").read_bytes() == BYTES[2]
        shown = json.loads(cpvctl(sock, "show", f"{ART}#prod", "--json").stdout)
        assert shown["version"] == "v1.1.0" and shown["stages"] == ["prod"]

        # gto reads the same answers from a fresh clone of the remote
        wait_for(lambda: not a.client().status()["registry"]["unpushed"], what="pushed")
        clone = short_tmp / "clone"
        subprocess.run(["git", "clone", "-q", str(bare_remote), str(clone)], check=True)
        assert gto_show(clone, f"{ART}@latest") == "v1.2.0"
        assert gto_show(clone, f"{ART}#prod") == "v1.1.0"
        assert gto_show(clone, f"{ART}#best") == "v1.2.0"

        # bad references: exit 2 for a bad stage name, exit 1 for what does not exist
        bad = cpvctl(sock, "pull", f"{ART}#no good", "-o", str(out / "x"))
        assert bad.returncode == 2 and "invalid stage" in bad.stderr
        for ref, says in (
            (f"{ART}#staging", "no version in stage 'staging'"),
            (f"{ART}@v7.0", "has no version v7.0.0"),
            ("team/none@latest", "unknown artifact"),
        ):
            proc = cpvctl(sock, "show", ref)
            assert proc.returncode == 1 and says in proc.stderr, proc.stderr

        # the remote refuses pushes: a version made meanwhile is no @latest
        refuse_pushes(bare_remote, True)
        (ck / "epoch-3.bin").write_bytes(b"epoch four " * 800)
        (other / "first.bin").write_bytes(b"other one")
        wait_for(lambda: versions(a, OTHER) == ["v1.0.0"], what="the other artifact's version")
        wait_for(lambda: len(versions(a, ART)) == 4, what="version 4")
        proc = cpvctl(sock, "pull", f"{OTHER}@latest", "-o", str(out / "o"))
        assert proc.returncode == 1 and "no pushed version yet" in proc.stderr
        assert pulled(sock, f"{ART}@latest", out / "l3").read_bytes() == BYTES[2]
        refuse_pushes(bare_remote, False)
        wait_for(lambda: len(tags(bare_remote)) == 5, what="the held versions pushed")
        assert pulled(sock, f"{OTHER}@latest", out / "o").read_bytes() == b"other one"

    # a fresh machine: no registry yet, only the remote and the same storage configured
    b = daemon_factory(name="b", watches=[], remote=bare_remote, storage_url=storage)
    with b:
        path = Client(str(b.socket)).pull(f"{ART}@latest", short_tmp / "resume")
        assert path == short_tmp / "resume" / "epoch-3.bin"
        assert path.read_bytes() == b"epoch four " * 800
        assert pulled(b.socket, f"{ART}#prod", short_tmp / "r2").read_bytes() == BYTES[1]
        # the README's first-run rule: nothing to resume from is a NotFound, not a crash
        with pytest.raises(NotFound) as err:
            Client(str(b.socket)).pull("team/new@latest", short_tmp / "resume")
        assert err.value.code == "unknown_artifact"
        # the bare name is the registry's current version: v1.3, made after the revert
        assert pulled(b.socket, ART, short_tmp / "r3").read_bytes() == b"epoch four " * 800
