"""Packaging: the wheel installs into a clean venv and its console scripts answer; the Debian
package builds from the source tree with the unit, the venv and the maintainer scripts.

Installing cpv's dependencies (dvc, boto3, ...) into a fresh venv takes minutes on these
machines, so by default the clean venv gets only the wheel and borrows the dependencies from
the test environment through a ``.pth`` line (its own site-packages stays first, so ``cpvd``
is imported from the wheel, which the tests assert). ``CPV_TEST_FULL_PACKAGING=1`` runs the
full installs instead (wheel with its dependencies; the .deb with a complete venv); CI can
run them in a separate, slower job. ``packaging/build-deb.sh`` is the same script either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("CPV_TEST_FULL_PACKAGING") == "1"
FULL_REASON = "full install with dependencies takes minutes: set CPV_TEST_FULL_PACKAGING=1"
VERSION = "0.1.0"


def sh(
    *argv: str | Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def stage_source(dest: Path) -> Path:
    """The source tree as a clean checkout would have it, plus untracked (not ignored) files,
    so a stale build/ or egg-info in the work tree cannot leak into the wheel."""
    listing = sh("git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in filter(None, listing.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "cpvctl" / "cli.py").exists() or not (REPO / "cpvd" / "cli.py").exists():
        pytest.skip("the console scripts' modules (cpvd/cli.py, cpvctl/cli.py) are not written yet")
    work = tmp_path_factory.mktemp("wheel")
    src = stage_source(work / "src")
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", src)
    (built,) = (work / "dist").glob("cpv-*.whl")
    return built


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (
        "cpvd/service/install.py",
        "cpvd/service/sdnotify.py",
        "cpvd/py.typed",
        "cpvctl/py.typed",
        "cpvd/service/units/systemd/system/cpvd.service",
        "cpvd/service/units/systemd/user/cpvd.service",
        "cpvd/service/units/systemd/system/cpvd.toml",
        "cpvd/service/units/launchd/io.cpv.cpvd.plist",
    ):
        assert f in names, f
    assert not any(n.startswith("tests/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"cpv-{VERSION}.dist-info/entry_points.txt")
    assert b"cpvd = cpvd.cli:main" in entry_points
    assert b"cpvctl = cpvctl.cli:main" in entry_points


@pytest.mark.parametrize(
    "full", [False, pytest.param(True, marks=pytest.mark.skipif(not FULL, reason=FULL_REASON))]
)
def test_wheel_in_a_clean_venv(wheel: Path, tmp_path: Path, full: bool) -> None:
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    deps = [] if full else ["--no-deps"]
    sh(sys.executable, "-m", "pip", "--python", py, "install", "-q", *deps, wheel, timeout=900)
    if not full:
        site = Path(
            sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
        )
        (site / "_cpv_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("PYTHONPATH", None)
    assert sh(venv / "bin" / "cpvd", "--version", env=env).strip() == f"cpvd {VERSION}"
    assert sh(venv / "bin" / "cpvctl", "--version", env=env).strip() == f"cpvctl {VERSION}"
    code = "import cpvd, cpvctl; print(cpvd.__file__); print(cpvctl.__file__)"
    where = sh(py, "-c", code, cwd=tmp_path)  # not the repo: '' on sys.path would win
    assert all(Path(p).is_relative_to(venv) for p in where.split()), where

    # the installed package renders its unit with itself as ExecStart
    out = sh(venv / "bin" / "cpvd", "service", "install", "--user", "--dry-run", env=env)
    assert f"ExecStart={(venv / 'bin' / 'cpvd').resolve()} run\n" in out
    assert not (tmp_path / "cfg").exists()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
@pytest.mark.parametrize(
    "full", [False, pytest.param(True, marks=pytest.mark.skipif(not FULL, reason=FULL_REASON))]
)
def test_debian_package(tmp_path: Path, full: bool) -> None:
    out = tmp_path / "out"
    flags = ["--worktree"] + ([] if full else ["--no-deps"])
    env = {**os.environ, "BUILD_PYTHON": sys.executable}
    log = sh("sh", REPO / "packaging/build-deb.sh", "--out", out, *flags, env=env, timeout=1200)
    (deb,) = out.glob("cpv_*.deb")
    assert f"built {deb}" in log

    info = sh("dpkg-deb", "-I", deb)
    for line in ("Package: cpv", f"Version: {VERSION}-1", "Depends: python3."):
        assert line in info, line
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert f" {script} " in info, script

    listing = sh("dpkg-deb", "-c", deb)
    for path in (
        "./usr/lib/systemd/system/cpvd.service",
        "./etc/cpv/cpvd.toml",
        "./opt/cpv/bin/cpvd",
        "./opt/cpv/bin/cpvctl",
        "./opt/cpv/pyvenv.cfg",
        "./usr/bin/cpvd -> /opt/cpv/bin/cpvd",
        "./usr/bin/cpvctl -> /opt/cpv/bin/cpvctl",
    ):
        assert path in listing, path

    root = tmp_path / "root"
    sh("dpkg-deb", "-R", deb, root)
    unit = (root / "usr/lib/systemd/system/cpvd.service").read_bytes()
    assert unit == (REPO / "service/systemd/system/cpvd.service").read_bytes()
    assert b"ExecStart=/opt/cpv/bin/cpvd run --config /etc/cpv/cpvd.toml" in unit
    assert (root / "DEBIAN/conffiles").read_text() == "/etc/cpv/cpvd.toml\n"
    for script in ("postinst", "prerm", "postrm"):
        maintainer_script = root / "DEBIAN" / script
        assert maintainer_script.stat().st_mode & 0o111, f"{script} not executable"
        sh("sh", "-n", maintainer_script)
    postinst = (root / "DEBIAN/postinst").read_text()
    assert "useradd --system --gid cpv" in postinst and "groupadd --system cpv" in postinst
    postrm = (root / "DEBIAN/postrm").read_text()
    assert "userdel cpv" in postrm and "groupdel cpv" in postrm

    # relocated: nothing names the build's staging directory, scripts run /opt/cpv's python
    venv = root / "opt/cpv"
    assert (venv / "bin/cpvd").read_text().splitlines()[0] == "#!/opt/cpv/bin/python"
    leaked = subprocess.run(
        ["grep", "-rlI", "--fixed-strings", "cpv-deb.", str(venv)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert leaked.stdout == "", f"staging path left in: {leaked.stdout}"
    assert (
        "command = /usr/bin/python3 -m venv --without-pip /opt/cpv"
        in (venv / "pyvenv.cfg").read_text()
    )
    # the packaged venv runs (from where it was unpacked) and imports cpv from itself
    code = "import cpvd.service.install, cpvctl; print(cpvd.__file__)"
    where = sh(venv / "bin/python", "-c", code, cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv)
    if full:
        version = sh(venv / "bin/python", "-m", "cpvd", "--version", cwd=tmp_path)
        assert version.strip() == f"cpvd {VERSION}"
