"""The real daemon with a ``[retention]`` table, and GTO-style pruning from another clone."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import DaemonProcess, daemons_of, toml_str


@dataclass
class GcDaemon(DaemonProcess):
    retention: dict[str, Any] = field(default_factory=dict)
    keep_local: dict[str, int] = field(default_factory=dict)  # artifact -> N

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        for artifact, n in self.keep_local.items():
            text = text.replace(
                f"artifact = {toml_str(artifact)}\n",
                f"artifact = {toml_str(artifact)}\nkeep_local = {n}\n",
            )
        lines = ["[retention]", *(f"{k} = {toml_str(v)}" for k, v in self.retention.items())]
        self.config_path.write_text(text + "\n".join(lines) + "\n")


def gc_daemons(short_tmp: Path) -> Iterator[Callable[..., GcDaemon]]:
    """A fixture's body: make GcDaemons under short_tmp; kill those still running."""
    yield from daemons_of(GcDaemon, short_tmp)


def git_in(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def deregister(remote: Path, clone: Path, artifact: str, *versions: str) -> None:
    """``gto deprecate NAME VERSION``'s tag ``NAME@VERSION!#N``, made with plain git in
    another clone and pushed, as a colleague's machine would."""
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    git_in(clone, "fetch", "-q", "--tags")
    for n, version in enumerate(versions, start=1):
        commit = git_in(clone, "rev-parse", f"{artifact}@{version}^{{commit}}").strip()
        tag = f"{artifact}@{version}!#{n}"
        git_in(clone, "tag", "-a", tag, "-m", f"Deregistering {artifact} {version}", commit)
        git_in(clone, "push", "-q", "origin", f"refs/tags/{tag}")
