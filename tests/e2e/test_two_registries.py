"""Two teams on one machine: one real daemon, two ``[[registry]]`` profiles, each with its own
bucket on moto's S3 server (and its own AWS profile), its own bare Git remote and its own
watch. Each watch's versions land only in its own remote, its objects only in its own
bucket; ``cpvctl versions``/``show``/``pull`` work for both artifacts through the one socket.
And a registry whose remote hangs does not hold up the other's versions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, daemons_of, git, toml_str, wait_for

DVC = str(Path(sys.executable).with_name("dvc"))
TEAMS = ("team-a", "team-b")


@dataclass
class Team:
    name: str
    remote: Path
    bucket: str
    watch: Path

    @property
    def artifact(self) -> str:
        return f"{self.name}/model"


@dataclass
class TwoTeamDaemon(DaemonProcess):
    """The harness's daemon with ``[[registry]]``/``[[storage]]`` profiles for ``teams``."""

    teams: list[Team] = field(default_factory=list)

    def registry_of(self, team: Team) -> Path:
        return self.root / f"registry-{team.name}"

    def write_config(self) -> None:
        lines = [
            "[daemon]",
            f"socket = {toml_str(self.socket)}",
            f"state_dir = {toml_str(self.state_dir)}",
            "rescan_seconds = 2",
        ]
        for t in self.teams:
            lines += [
                "[[storage]]",
                f"name = {toml_str(t.name + '-store')}",
                f"url = {toml_str(f's3://{t.bucket}/ckpt')}",
                f"endpoint_url = {toml_str(self.endpoint_url)}",
                f"profile = {toml_str(t.name)}",
                'region = "us-east-1"',
                "[[registry]]",
                f"name = {toml_str(t.name)}",
                f"path = {toml_str(self.registry_of(t))}",
                f"remote = {toml_str(t.remote)}",
                f"storage = {toml_str(t.name + '-store')}",
            ]
        for w in self.watches:
            lines += [
                "[[watch]]",
                f"path = {toml_str(w.path)}",
                f"artifact = {toml_str(w.artifact)}",
                f"settle_seconds = {w.settle_seconds}",
                'layout = "entries"',
                f"registry = {toml_str(w.artifact.split('/')[0])}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def two_teams(
    short_tmp: Path, moto_server: str
) -> Iterator[Callable[[], tuple[TwoTeamDaemon, list[Team]]]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    teams = []
    for name in TEAMS:
        remote = short_tmp / f"{name}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        bucket = f"cpv-{name}-{os.urandom(4).hex()}"
        s3.create_bucket(Bucket=bucket)
        teams.append(Team(name, remote, bucket, short_tmp / f"w-{name}"))
    aws = short_tmp / "aws"
    aws.mkdir()
    (aws / "config").write_text("".join(
        f"[profile {t.name}]\nregion = us-east-1\n" for t in teams
    ))  # fmt: skip
    (aws / "credentials").write_text("".join(
        f"[{t.name}]\naws_access_key_id = {t.name}\naws_secret_access_key = testing\n"
        for t in teams
    ))  # fmt: skip
    env = {"AWS_CONFIG_FILE": str(aws / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials")}  # fmt: skip
    factory = daemons_of(TwoTeamDaemon, short_tmp)
    make = next(factory)

    def build() -> tuple[TwoTeamDaemon, list[Team]]:
        d = make(
            watches=[Watch(t.watch, t.artifact, settle_seconds=0.3) for t in teams],
            endpoint_url=moto_server,
            teams=teams,
            env=env,
        )
        return d, teams

    yield build
    next(factory, None)


def keys(moto_server: str, bucket: str) -> set[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for p in pages for o in p.get("Contents", [])}


def object_key(data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    return f"ckpt/files/md5/{md5[:2]}/{md5[2:]}"


def remote_tags(remote: Path) -> list[str]:
    """The tags a plain ``git ls-remote`` shows (no CPV involved)."""
    out = subprocess.run(["git", "ls-remote", "--tags", str(remote)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return sorted(ln.split("refs/tags/")[1] for ln in out.splitlines() if "^{}" not in ln)


def test_each_watch_versions_into_its_own_remote_and_bucket_only(
    short_tmp: Path,
    moto_server: str,
    two_teams: Callable[[], tuple[TwoTeamDaemon, list[Team]]],
) -> None:
    d, teams = two_teams()
    a, b = teams
    payloads = {t.name: [os.urandom(200_000 + i) for i in range(2)] for t in teams}
    with d:
        for i in range(2):
            for t in teams:
                (t.watch / f"epoch-{i}.bin").write_bytes(payloads[t.name][i])
            for t in teams:
                want = [f"{t.artifact}@v1.{i}.0" for i in range(i + 1)]
                try:
                    wait_for(lambda t=t, want=want: remote_tags(t.remote) == want, timeout=90,
                             what=f"{t.name}'s tags")  # fmt: skip
                except AssertionError:
                    raise AssertionError(f"{d.client().status()}\n{d.log()}") from None
        status = d.client().status()
        listed = {r["name"]: r for r in status["registries"]}
        assert listed["team-a"]["artifacts"] == [a.artifact]
        assert listed["team-b"]["artifacts"] == [b.artifact]
        assert {w["artifact"]: w["registry"] for w in status["watches"]} == {
            a.artifact: "team-a", b.artifact: "team-b"}  # fmt: skip
        for t in teams:
            versions = d.client().versions(t.artifact)
            assert sorted(v["version"] for v in versions) == ["v1.0.0", "v1.1.0"]
            shown = d.client().show(f"{t.artifact}@v1.0")
            assert shown["md5"] == hashlib.md5(payloads[t.name][0]).hexdigest()
            out = short_tmp / f"pulled-{t.name}"
            res = cpvctl(d.socket, "pull", f"{t.artifact}@v1.0.0", "-o", str(out))
            assert res.returncode == 0, res.stdout + res.stderr
            assert (out / "epoch-0.bin").read_bytes() == payloads[t.name][0]
        assert len(d.client().artifacts()) == 2
        shown_status = cpvctl(d.socket, "status").stdout
        for t in teams:
            assert f"registry {t.name} ({t.artifact}): {d.registry_of(t)} -> {t.remote}" \
                in shown_status, shown_status
            assert f"  storage: s3://{t.bucket}/ckpt  reachable" in shown_status, shown_status
        collected = d.client().gc(dry_run=True)  # every registry's storage, none deleted
        assert set(collected["registries"]) == {"team-a", "team-b"}
        assert collected["objects_to_delete"] == 0
        verified = d.client().verify()
        assert (verified["versions"], verified["missing"], verified["corrupt"]) == (4, [], [])
    # only its own versions in each remote; its own objects in each bucket
    assert remote_tags(a.remote) == ["team-a/model@v1.0.0", "team-a/model@v1.1.0"]
    assert remote_tags(b.remote) == ["team-b/model@v1.0.0", "team-b/model@v1.1.0"]
    for t, other in ((a, b), (b, a)):
        stored = keys(moto_server, t.bucket)
        assert {object_key(p) for p in payloads[t.name]} <= stored
        assert not {object_key(p) for p in payloads[other.name]} & stored
        clone = short_tmp / f"clone-{t.name}"
        subprocess.run(["git", "clone", "-q", str(t.remote), str(clone)], check=True)
        pointers = git(clone, "ls-files", "artifacts").split()
        assert pointers and all(p.startswith(f"artifacts/{t.name}/") for p in pointers), pointers
        env = {**os.environ, **d.env, "AWS_ENDPOINT_URL": moto_server}  # the team's profile
        res = subprocess.run([DVC, "pull", "-j", "1"], cwd=clone, env=env, capture_output=True,
                             text=True, timeout=240)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        got = clone / f"artifacts/{t.artifact}/checkpoint"
        assert got.read_bytes() == payloads[t.name][1]


def hang_pushes(remote: Path, entered: Path, release: Path) -> None:
    """A pre-receive hook that holds every push to ``remote`` until ``release`` exists: a
    remote that hangs (a stalled SSH link, a slow host), not one that fails fast."""
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f"touch '{entered}'\n"
        f"while [ ! -e '{release}' ]; do sleep 0.1; done\n"
        "cat > /dev/null\n"
    )
    hook.chmod(0o755)


def test_a_hanging_remote_of_one_registry_does_not_hold_up_the_other(
    short_tmp: Path,
    two_teams: Callable[[], tuple[TwoTeamDaemon, list[Team]]],
) -> None:
    d, teams = two_teams()
    a, b = teams
    entered, release = short_tmp / "b-push-entered", short_tmp / "b-push-release"
    hang_pushes(b.remote, entered, release)
    try:
        with d:
            (b.watch / "epoch-0.bin").write_bytes(os.urandom(100_000))
            # team-b's first push (its registry's first commit) hangs in its remote, and with
            # it team-b's registry thread; team-a's checkpoints still become pushed versions
            wait_for(entered.exists, timeout=90, what="team-b's push to reach its remote")
            for i in range(2):
                (a.watch / f"epoch-{i}.bin").write_bytes(os.urandom(100_000 + i))
                want = [f"team-a/model@v1.{j}.0" for j in range(i + 1)]
                try:
                    wait_for(lambda want=want: remote_tags(a.remote) == want, timeout=90,
                             what="team-a's versions in its remote")  # fmt: skip
                except AssertionError:
                    raise AssertionError(f"{d.client().status()}\n{d.log()}") from None
            assert not release.exists() and remote_tags(b.remote) == []
            waiting = d.client().status()["jobs"]  # team-b's job waits on its own registry
            assert [(j["artifact"], j["registry"]) for j in waiting] == [("team-b/model", "team-b")]
            release.touch()
            wait_for(lambda: remote_tags(b.remote) == ["team-b/model@v1.0.0"], timeout=120,
                     what="team-b's version once its remote answers")  # fmt: skip
    finally:
        release.touch()
