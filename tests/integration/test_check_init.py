"""``cpvd check`` and ``cpvd init`` against real things: moto's S3 server, local
directories, bare Git repositories, and the config file they write."""

from __future__ import annotations

import io
import os
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from cpvd.cli import main
from cpvd.config.load import load_config
from cpvd.config.model import Config, RegistryConfig, StorageConfig, WatchConfig
from cpvd.errors import ConfigError
from cpvd.redact import mask_url
from cpvd.setup.check import (
    CheckResult,
    check_git_remote,
    check_storage,
    format_results,
    git_env,
    run_checks,
)
from cpvd.setup.wizard import InitFailed, WizardAnswers, run_wizard


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3(bucket: str, endpoint: str, profile: str | None = None) -> StorageConfig:
    return StorageConfig(url=f"s3://{bucket}/ckpt", endpoint_url=endpoint, profile=profile)


# ---------------------------------------------------------------- storage


def test_s3_bucket_ok(moto_server: str, s3_bucket: str) -> None:
    r = check_storage(s3(s3_bucket, moto_server))
    assert r == CheckResult(
        "storage", True, f"s3://{s3_bucket}/ckpt: bucket reachable via {moto_server}"
    )


def test_s3_missing_bucket_names_bucket_and_key(moto_server: str) -> None:
    r = check_storage(s3("cpv-no-such-bucket", moto_server))
    assert not r.ok
    assert "bucket 'cpv-no-such-bucket' does not exist" in r.detail
    assert "[storage] url" in r.detail


def test_s3_unreachable_endpoint_names_endpoint_url() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    r = check_storage(s3("some-bucket", endpoint))
    assert not r.ok
    assert f"endpoint unreachable: {endpoint}" in r.detail
    assert "[storage] endpoint_url" in r.detail


def test_s3_unknown_profile_names_profile(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    r = check_storage(s3("b-1", moto_server, profile="nosuch"))
    assert not r.ok
    assert "AWS profile 'nosuch' not found" in r.detail
    assert "[storage] profile" in r.detail


def test_s3_profile_from_aws_config_is_used(
    moto_server: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("[training]\naws_access_key_id = k\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert check_storage(s3(s3_bucket, moto_server, profile="training")).ok


def test_local_storage_is_created_and_writable(short_tmp: Path) -> None:
    target = short_tmp / "a" / "b" / "store"
    r = check_storage(StorageConfig(url=str(target)))
    assert r.ok, r.detail
    assert target.is_dir()
    assert list(target.iterdir()) == []  # the probe file is gone


def test_local_storage_that_is_a_file_fails(short_tmp: Path) -> None:
    f = short_tmp / "file"
    f.write_text("x")
    r = check_storage(StorageConfig(url=str(f)))
    assert not r.ok
    assert "[storage] url" in r.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_local_storage_unwritable_fails(short_tmp: Path) -> None:
    ro = short_tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = check_storage(StorageConfig(url=str(ro)))
        assert not r.ok
        assert f"{ro}: not writable" in r.detail
        r = check_storage(StorageConfig(url=str(ro / "sub")))
        assert not r.ok
        assert "cannot create the storage directory" in r.detail
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- git remote


def test_git_remote_bare_repo_ok(bare_remote: Path) -> None:
    r = check_git_remote(RegistryConfig(remote=str(bare_remote)))
    assert r.ok, r.detail


def test_git_remote_missing_path_fails_naming_remote(short_tmp: Path) -> None:
    missing = short_tmp / "no-such.git"
    r = check_git_remote(RegistryConfig(remote=str(missing)))
    assert not r.ok
    assert r.detail.startswith(f"{missing}: ")
    assert "does not appear to be a git repository" in r.detail
    assert "[registry] remote" in r.detail


def test_git_remote_with_missing_ssh_key_fails_before_running_git(short_tmp: Path) -> None:
    key = short_tmp / "id_missing"
    r = check_git_remote(RegistryConfig(remote="git@example.invalid:x.git", ssh_key=key))
    assert not r.ok
    assert f"{key}: SSH key missing" in r.detail


def test_git_remote_unreachable_host_fails_fast() -> None:
    r = check_git_remote(RegistryConfig(remote=f"https://u:secret@127.0.0.1:{closed_port()}/r.git"))
    assert not r.ok
    assert "the remote host is unreachable" in r.detail
    assert "secret" not in r.detail


def test_git_env_uses_the_key_alone_and_never_prompts() -> None:
    assert git_env(RegistryConfig()) == {"GIT_TERMINAL_PROMPT": "0"}
    env = git_env(RegistryConfig(ssh_key=Path("/keys/my key")))
    assert env["GIT_SSH_COMMAND"] == (
        "ssh -i '/keys/my key' -o IdentitiesOnly=yes -o BatchMode=yes "
        "-o StrictHostKeyChecking=accept-new"
    )


def test_mask_url_hides_credentials() -> None:
    assert mask_url("https://u:tok@bitbucket.org/a/b.git") == "https://***@bitbucket.org/a/b.git"
    assert mask_url("git@bitbucket.org:a/b.git") == "git@bitbucket.org:a/b.git"


# ---------------------------------------------------------------- run_checks / cpvd check


def test_run_checks_reports_every_problem(short_tmp: Path, bare_remote: Path) -> None:
    cfg = Config(
        registry=RegistryConfig(path=short_tmp / "registry", remote=str(bare_remote)),
        storage=StorageConfig(url=str(short_tmp / "store")),
        watches=(
            WatchConfig(short_tmp, "ok"),
            WatchConfig(short_tmp / "not-yet", "missing"),
        ),
    )
    results = run_checks(cfg)
    assert [(r.name, r.ok) for r in results] == [
        ("storage", True),
        ("git remote", True),
        ("registry", True),
        ("watch ok", True),
        ("watch missing", False),
    ]
    assert "create it (mkdir -p" in results[4].detail
    assert "[[watch]] #2 path" in results[4].detail
    text = format_results(results)
    assert text.splitlines()[-1] == "1 check failed"
    assert "FAIL  watch missing:" in text


def test_cpvd_check_command_exit_codes(
    short_tmp: Path, moto_server: str, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = short_tmp / "good.toml"
    good.write_text(
        f'[storage]\nurl = "s3://{s3_bucket}"\nendpoint_url = "{moto_server}"\n'
        f'[[watch]]\npath = "{short_tmp}"\nartifact = "m"\n'
    )
    assert main(["check", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert f"config: {good}" in out
    assert "all checks passed" in out

    bad = short_tmp / "bad.toml"
    bad.write_text(f'[storage]\nurl = "s3://cpv-absent"\nendpoint_url = "{moto_server}"\n')
    assert main(["check", "--config", str(bad)]) == 1
    assert "bucket 'cpv-absent' does not exist" in capsys.readouterr().out


# ---------------------------------------------------------------- cpvd init


def test_init_non_interactive_writes_a_config_load_config_reads(
    short_tmp: Path,
    moto_server: str,
    s3_bucket: str,
    bare_remote: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg_path = short_tmp / "etc" / "cpvd.toml"
    watch = short_tmp / "runs"
    watch.mkdir()
    argv = [
        "init",
        "--non-interactive",
        "--config",
        str(cfg_path),
        "--storage",
        f"s3://{s3_bucket}/team",
        "--endpoint-url",
        moto_server,
        "--region",
        "us-east-1",
        "--remote",
        str(bare_remote),
        "--watch",
        str(watch),
        "--artifact",
        "vision/resnet50",
        "--kind",
        "model",
    ]
    assert main(argv) == 0, capsys.readouterr()
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600
    cfg = load_config(cfg_path)
    assert cfg.storage == StorageConfig(
        url=f"s3://{s3_bucket}/team", endpoint_url=moto_server, region="us-east-1"
    )
    assert cfg.registry == RegistryConfig(remote=str(bare_remote))
    assert cfg.watches == (WatchConfig(watch, "vision/resnet50", "model"),)
    assert f"wrote {cfg_path}" in capsys.readouterr().out

    # a second run refuses to overwrite; --force does
    before = cfg_path.read_text()
    assert main([*argv, "--artifact", "other"]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert cfg_path.read_text() == before
    assert main([*argv, "--artifact", "other", "--force"]) == 0
    assert load_config(cfg_path).watches[0].artifact == "other"


def test_init_failing_check_writes_nothing_unless_forced(short_tmp: Path) -> None:
    cfg_path = short_tmp / "cpvd.toml"
    answers = WizardAnswers(
        storage_url=str(short_tmp / "store"),
        watch_path=str(short_tmp / "not-created"),
        artifact="m",
        config_path=cfg_path,
    )
    out = io.StringIO()
    with pytest.raises(InitFailed, match="not written because a check failed"):
        run_wizard(answers, None, out)
    assert not cfg_path.exists()
    assert "FAIL  watch m:" in out.getvalue()

    assert run_wizard(replace(answers, force=True), None, io.StringIO()) == cfg_path
    assert load_config(cfg_path).watches[0].path == short_tmp / "not-created"


def test_init_non_interactive_requires_the_watch(short_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="--watch is required with --non-interactive"):
        run_wizard(WizardAnswers(config_path=short_tmp / "c.toml"), None, io.StringIO())


def test_init_interactive_with_scripted_answers(short_tmp: Path, bare_remote: Path) -> None:
    watch = short_tmp / "ckpt"
    watch.mkdir()
    cfg_path = short_tmp / "conf" / "cpvd.toml"
    script: dict[str, list[str]] = {
        "Write the config to": [str(cfg_path)],
        "Storage for checkpoint bytes": [str(short_tmp / "store")],
        "Git remote": [str(bare_remote)],
        "Directory your training writes": [str(watch)],
        # first answer invalid: the wizard says why and asks again
        "Artifact name": ["not valid!", "team/model"],
        "Kind": [""],  # Enter: the default
    }
    asked: list[tuple[str, str | None]] = []

    def ask(prompt: str, default: str | None) -> str:
        asked.append((prompt, default))
        for start, answer in script.items():
            if prompt.startswith(start):
                return answer.pop(0)
        raise AssertionError(f"unexpected question {prompt!r}")

    out = io.StringIO()
    path = run_wizard(WizardAnswers(), ask, out)
    assert path == cfg_path
    assert all(not left for left in script.values())  # every answer was asked for
    cfg = load_config(cfg_path)
    assert cfg.registry.remote == str(bare_remote)
    assert cfg.registry.ssh_key is None  # a local-path remote is not asked for a key
    assert cfg.storage.url == str(short_tmp / "store")
    assert cfg.watches == (WatchConfig(watch, "team/model", "model"),)
    assert ("Kind (model or data)", "model") in asked
    assert "invalid artifact name 'not valid!'" in out.getvalue()
    assert not any(p.startswith("AWS") for p, _ in asked)  # local storage: no S3 questions


def test_init_interactive_s3_asks_s3_questions(
    short_tmp: Path, moto_server: str, s3_bucket: str
) -> None:
    watch = short_tmp / "ckpt"
    watch.mkdir()
    answers = iter(
        [
            f"s3://{s3_bucket}/ckpts",  # storage
            "",  # AWS profile: default chain
            moto_server,  # endpoint
            "",  # region
            "",  # no Git remote
            str(watch),
            "data/set",
            "data",
        ]
    )
    prompts: list[str] = []

    def ask(prompt: str, default: str | None) -> str:
        prompts.append(prompt)
        return next(answers)

    cfg_path = short_tmp / "c.toml"
    run_wizard(WizardAnswers(config_path=cfg_path), ask, io.StringIO())
    assert next(answers, None) is None  # every scripted answer was used
    assert [p.split(" ")[0] for p in prompts] == [
        "Storage",
        "AWS",
        "S3",
        "AWS",
        "Git",
        "Directory",
        "Artifact",
        "Kind",
    ]
    cfg = load_config(cfg_path)
    assert cfg.storage == StorageConfig(url=f"s3://{s3_bucket}/ckpts", endpoint_url=moto_server)
    assert cfg.registry.remote is None
    assert cfg.watches == (WatchConfig(watch, "data/set", "data"),)
