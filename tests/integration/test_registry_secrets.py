"""A remote URL's ``user:token@`` never reaches a GitError (and so no log line or status)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpvd.config.model import RegistryConfig
from cpvd.errors import GitError
from cpvd.registry.git import run_git
from cpvd.registry.repo import RegistryRepo

SECRET = "s3cr3t-t0ken"
URL = f"http://x-token-auth:{SECRET}@127.0.0.1:9/acme/registry.git"


def test_run_git_masks_a_url_git_echoes_in_its_error(short_tmp: Path) -> None:
    subprocess.run(["git", "init", "-q", str(short_tmp)], check=True)
    with pytest.raises(GitError) as err:
        run_git(["rev-parse", URL], short_tmp)  # the message quotes git's argv
    assert SECRET not in err.value.message and SECRET not in str(err.value)
    assert "127.0.0.1:9/acme/registry.git" in err.value.message


def test_clone_and_push_failures_never_carry_the_token(short_tmp: Path) -> None:
    repo = RegistryRepo(RegistryConfig(path=short_tmp / "clone", remote=URL), {"url": "/x"})
    with pytest.raises(GitError) as err:
        repo.open({"a/b": "model"})
    assert SECRET not in str(err.value)

    # a local registry whose origin is the token URL: the push cannot reach it
    local = RegistryRepo(RegistryConfig(path=short_tmp / "reg"), {"url": "/x"})
    local.open({"a/b": "model"})
    local.git("remote", "add", "origin", URL)
    pushing = RegistryRepo(RegistryConfig(path=short_tmp / "reg", remote=URL), {"url": "/x"})
    with pytest.raises(GitError) as err:
        pushing.push()
    assert SECRET not in str(err.value)
    assert "http://***@127.0.0.1:9/acme/registry.git" in str(err.value)  # still says where
