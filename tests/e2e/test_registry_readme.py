"""The registry as a colleague meets it, with no CPV: ``git clone`` of the remote checks out
the registry (the bare remote's HEAD named a branch CPV never pushes), and every
``dvc artifacts get`` line of the README CPV writes works with the real dvc CLI (issue 14)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cpvd.registry.readme import current_readme
from cpvd.registry.remote_head import local_remote_dir
from tests.e2e.harness import DaemonProcess, Watch, git, tags, versions_of, wait_for

DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


def test_fresh_clone_checks_out_and_readme_dvc_commands_work(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    remote = short_tmp / "remote.git"  # as `git init --bare` makes it: HEAD -> master
    subprocess.run(
        ["git", "-c", "init.defaultBranch=master", "init", "-q", "--bare", str(remote)],
        check=True,
    )
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "vision/resnet50")], remote=remote)
    with d:
        (ck / "epoch-1.bin").write_bytes(b"one" * 1000)
        wait_for(lambda: versions_of(d, "vision/resnet50") == ["v1.0.0"], what="v1.0.0")
        (ck / "epoch-2.bin").write_bytes(b"two" * 1000)
        wait_for(lambda: len(versions_of(d, "vision/resnet50")) == 2, what="v1.1.0")
        d.client().promote("vision/resnet50", "v1.0.0", "prod")
        wait_for(lambda: len(tags(remote, "*")) == 3, what="tags pushed")

    clone = short_tmp / "clone"
    out = subprocess.run(
        ["git", "clone", str(remote), str(clone)], capture_output=True, text=True, check=True
    )
    assert "nonexistent ref" not in out.stderr, out.stderr
    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    readme = (clone / "README.md").read_text()
    assert (clone / "dvc.yaml").is_file()

    gets = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("dvc artifacts get")]
    assert len(gets) == 2
    expected = {"--rev": b"two" * 1000, "--stage": b"one" * 1000}  # v1.1.0, prod = v1.0.0
    for i, line in enumerate(gets):
        argv = shlex.split(line.replace("<this repo URL>", str(remote)), comments=True)
        argv = [a.replace("v1.2.0", "v1.1.0") for a in argv]
        work = short_tmp / f"get{i}"
        work.mkdir()
        proc = subprocess.run([DVC, *argv[1:]], cwd=work, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        option = next(o for o in expected if o in argv)
        assert (work / "checkpoint").read_bytes() == expected[option], line


def test_readme_written_by_an_earlier_cpv_is_mended() -> None:
    old = (
        "intro\n"
        "    dvc artifacts get <this repo URL> vision/resnet50 --rev vision/resnet50@v1.2.0\n"
    )
    mended = current_readme(old)
    assert "--rev vision/resnet50@" not in mended and "--rev v1.2.0" in mended
    assert mended.startswith("intro\n")  # the rest, perhaps edited by the team, stays


def test_local_remote_dir(short_tmp: Path) -> None:
    assert local_remote_dir(str(short_tmp)) == short_tmp
    assert local_remote_dir(f"file://{short_tmp}") == short_tmp
    assert local_remote_dir("git@bitbucket.org:acme/reg.git") is None
    assert local_remote_dir("https://example.invalid/reg.git") is None
    assert local_remote_dir(str(short_tmp / "absent")) is None
