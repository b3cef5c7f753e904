"""The README's walkthrough, run as written: its marked blocks, line by line, on a fresh HOME.

The blocks are found by their markers (``<!-- walkthrough:daemon`` and ``<!-- walkthrough:steps``)
so an edit to the README is what this test runs. Each step must match exactly one entry of
``CHECKS`` (what its output must show), and every check must be used: a README step added
without a check, or a check whose step went away, fails here. The install line is not run
(no network for pip here); ``~/.cpv`` is made a link to this venv, and the README's own
``export PATH`` line is what puts ``cpvd``/``cpvctl`` on PATH.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cpvctl.client import Client
from cpvctl.errors import CpvctlError
from tests.e2e.harness import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK_RE = re.compile(r"<!-- walkthrough:(\w+)[^>]*-->\s*```sh\n(.*?)```", re.S)
#: how long a step that waits for the daemon (settle, upload, commit) may keep being retried
PATIENCE = 120.0


@dataclass(frozen=True)
class Check:
    prefix: str  # the step's command starts with this
    expect: str  # a regex its stdout must match
    retry: bool = False  # a query repeated until the daemon has caught up, as a user would
    follow: bool = False  # runs until interrupted: read until ``expect``, then Ctrl-C


CHECKS = (
    Check("export PATH=", ""),
    Check("python3 -c", ""),
    Check("cpvctl status", r"WATCH .*\n.*checkpoints\s+demo/model"),
    Check("cpvctl versions demo/model", r"v1\.0\.0", retry=True),
    Check("cpvctl show demo/model@v1.1", r"v1\.1\.0", retry=True),
    Check("cpvctl revert demo/model v1.0", r"demo/model.*v1\.0\.0"),
    Check("cpvctl pull demo/model@v1.1 -o", r"epoch-2\.safetensors"),
    Check("cpvctl promote demo/model@v1.1 prod", r"demo/model#prod#1"),
    Check("cpvctl events --since 10m --follow", r"promoted", follow=True),
    Check("cpvctl events", r"versioned .*artifact=demo/model"),
)


def walkthrough_blocks() -> dict[str, list[str]]:
    """Marked block name -> its command lines (blank lines and comment-only lines dropped)."""
    blocks = {m[1]: m[2] for m in _BLOCK_RE.finditer(README.read_text())}
    return {
        name: [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        for name, text in blocks.items()
    }


def check_for(step: str) -> Check:
    matches = [c for c in CHECKS if step.startswith(c.prefix)]
    assert matches, f"README walkthrough step has no check in this test: {step}"
    return max(matches, key=lambda c: len(c.prefix))  # the most specific one


@pytest.fixture
def fresh_home(short_tmp: Path) -> Iterator[dict[str, str]]:
    """A new user's environment: empty HOME, private runtime dir, ~/.cpv = this venv."""
    home = short_tmp / "h"
    (home / ".cpv").mkdir(parents=True)
    (home / ".cpv" / "bin").symlink_to(Path(sys.executable).parent)  # what pip install made
    (home / "checkpoints").mkdir()  # the install line's `mkdir -p ~/checkpoints`
    runtime = short_tmp / "r"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    venv_bin = Path(sys.executable).parent
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin]
    env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(runtime),
        PATH=os.pathsep.join(path),
        PYTHONPATH=str(README.parent),  # the console scripts run this checkout's code
    )
    yield env


def _bash(
    lines: list[str], env: dict[str, str], log: Path | None = None, session: bool = False
) -> subprocess.Popen[str]:
    """``bash -c`` the lines in HOME; output to pipes, or all of it to ``log`` (the daemon's
    log would fill a pipe nobody reads)."""
    sink = open(log, "w") if log is not None else None  # noqa: SIM115 -- the child owns it
    try:
        return subprocess.Popen(
            ["bash", "-c", "\n".join(lines)],
            env=env,
            cwd=env["HOME"],
            stdout=sink or subprocess.PIPE,
            stderr=subprocess.STDOUT if sink else subprocess.PIPE,
            text=True,
            start_new_session=session,
        )
    finally:
        if sink is not None:
            sink.close()


def run_step(step: str, exports: list[str], env: dict[str, str]) -> str:
    check = check_for(step)
    if check.follow:
        return follow_step(step, exports, env, check)
    deadline = time.monotonic() + (PATIENCE if check.retry else 60.0)
    while True:
        proc = _bash([*exports, step], env)
        out, err = proc.communicate(timeout=60)
        ok = proc.returncode == 0 and re.search(check.expect, out) is not None
        if ok or not check.retry or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, f"{step}\nexit {proc.returncode}\n{out}\n{err}"
    assert re.search(check.expect, out), f"{step}\nexpected /{check.expect}/ in:\n{out}\n{err}"
    return out


def follow_step(step: str, exports: list[str], env: dict[str, str], check: Check) -> str:
    """Start it, read until the expected line, then press Ctrl-C (SIGINT): exit 0."""
    proc = _bash([*exports, step], env, session=True)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(check.expect, line):
                break
        os.killpg(proc.pid, signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(seen) + rest
    assert re.search(check.expect, out), f"{step}\nexpected /{check.expect}/ in:\n{out}\n{err}"
    assert proc.returncode in (0, -signal.SIGINT), f"{step}: exit {proc.returncode}\n{err}"
    return out


def test_readme_marks_both_blocks_and_every_check_is_used() -> None:
    blocks = walkthrough_blocks()
    assert set(blocks) == {"daemon", "steps"}
    assert blocks["daemon"][-1].startswith("cpvd run --watch ~/checkpoints --artifact demo/model")
    used = {check_for(s).prefix for s in blocks["daemon"][:-1] + blocks["steps"]}
    assert used == {c.prefix for c in CHECKS}, "a check whose README step is gone"
    install = re.search(r"```sh\n(python3 -m venv ~/\.cpv .*)\n```", README.read_text())
    assert install is not None and "~/.cpv/bin/pip install" in install[1]
    assert 'export PATH="$HOME/.cpv/bin:$PATH"' in blocks["daemon"]  # what the install made


def test_readme_walkthrough_runs_as_written(fresh_home: dict[str, str]) -> None:
    env = fresh_home
    blocks = walkthrough_blocks()
    log = Path(env["HOME"]).parent / "cpvd.log"
    daemon = _bash(blocks["daemon"], env, log=log, session=True)
    sock = Path(env["XDG_RUNTIME_DIR"]) / "cpv" / "cpvd.sock"
    try:

        def answers() -> bool:
            assert daemon.poll() is None, f"cpvd exited:\n{log.read_text()[-4000:]}"
            try:
                Client(str(sock), timeout=2).version()
            except CpvctlError:
                return False
            return True

        wait_for(answers, timeout=60, what="cpvd answering on the default socket")
        exports: list[str] = []
        outputs: dict[str, str] = {}
        for step in blocks["steps"]:
            if step.startswith("export "):
                exports.append(step)
                continue
            outputs[step] = run_step(step, exports, env)
        home = Path(env["HOME"])
        restored = home / "restore" / "epoch-2.safetensors"
        assert restored.read_bytes() == (home / "checkpoints" / "epoch-2.safetensors").read_bytes()
        versions = Client(str(sock)).versions("demo/model")
        assert [v["version"] for v in versions] == ["v1.1.0", "v1.0.0"]
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
