"""``cpvd init``: build a first config from flags and answers, check it, write it.

The wizard never calls ``input()`` itself: questions go through the ``ask`` callable the CLI
passes in (``None`` when non-interactive), so the same code serves a terminal, a
provisioning script with flags only, and a test with scripted answers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cpvd.config import paths
from cpvd.config.dump import dump_config
from cpvd.config.load import KINDS, parse_config
from cpvd.config.model import Config, RegistryConfig, StorageConfig, WatchConfig
from cpvd.errors import ConfigError, CpvError
from cpvd.redact import mask_url
from cpvd.setup.check import format_results, run_checks

Ask = Callable[[str, str | None], str]
#: wrong answers tolerated per question before giving up (a scripted ask could loop forever)
MAX_TRIES = 3


class InitFailed(CpvError):
    """The built config did not pass ``cpvd check``; nothing was written."""


@dataclass
class WizardAnswers:
    """Answers given as flags; ``None`` means "ask" (or use the default when non-interactive)."""

    storage_url: str | None = None
    aws_profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    git_remote: str | None = None
    ssh_key: str | None = None
    watch_path: str | None = None
    artifact: str | None = None
    kind: str | None = None
    config_path: Path | None = None
    force: bool = False


class _Asker:
    """Gets one answer: from a flag, else from ``ask``, else the default; validates it."""

    def __init__(self, ask: Ask | None, out: TextIO) -> None:
        self.ask = ask
        self.out = out

    def get(
        self,
        flag: str,
        given: str | None,
        prompt: str,
        default: str | None,
        *,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """The answer, ``None`` for an optional one left empty. ``check`` returns an error."""
        if given is not None:
            return self._validate(flag, given, check)
        if self.ask is None:
            if default is None and required:
                raise ConfigError(f"cpvd init: {flag} is required with --non-interactive")
            return None if default is None else self._validate(flag, default, check)
        for _ in range(MAX_TRIES):
            answer = self.ask(prompt, default).strip()
            if not answer:
                answer = default or ""
            if not answer:
                if not required:
                    return None
                problem: str | None = "an answer is required"
            else:
                problem = check(answer) if check else None
                if problem is None:
                    return answer
            print(f"  {mask_url(problem or '')}", file=self.out)
        raise ConfigError(f"cpvd init: no valid answer for {flag}")

    def _validate(self, flag: str, value: str, check: Callable[[str], str | None] | None) -> str:
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"cpvd init: {flag}: {mask_url(problem)}")
        return value


def _check_kind(value: str) -> str | None:
    return None if value in KINDS else f"must be model or data, got {value!r}"


def _check_artifact(value: str) -> str | None:
    from cpvctl.protocol import ProtocolError, validate_name

    try:
        validate_name(value)
    except ProtocolError as exc:
        return exc.message
    return None


def _check_storage(value: str) -> str | None:
    if value.startswith("s3://") or Path(value).expanduser().is_absolute():
        return None
    return f"expected s3://bucket[/prefix] or an absolute directory, got {value!r}"


def _abspath(value: str) -> str:
    """Answers come from a shell, so a relative path means relative to the current directory."""
    return os.path.abspath(os.path.expanduser(value))


def _looks_like_ssh(remote: str) -> bool:
    if remote.startswith("ssh://"):
        return True
    head = remote.split("/", 1)[0]
    return "://" not in remote and ":" in head  # scp-like: git@host:team/repo.git


def _build(answers: WizardAnswers, asker: _Asker, out: TextIO) -> Config:
    default_storage = str(paths.default_storage())
    storage_url = asker.get(
        "--storage",
        answers.storage_url,
        "Storage for checkpoint bytes (s3://bucket/prefix or a local directory)",
        default_storage,
        required=True,
        check=_check_storage,
    )
    assert storage_url is not None
    if not storage_url.startswith("s3://"):
        storage_url = _abspath(storage_url)
        for flag, value in (
            ("--aws-profile", answers.aws_profile),
            ("--endpoint-url", answers.endpoint_url),
            ("--region", answers.region),
        ):
            if value:
                print(f"note: {flag} ignored: storage is a local directory", file=out)
        storage = StorageConfig(url=storage_url)
    else:
        profile = asker.get(
            "--aws-profile", answers.aws_profile, "AWS profile (empty: default chain)", None
        )
        endpoint = asker.get(
            "--endpoint-url",
            answers.endpoint_url,
            "S3 endpoint URL for S3-compatible stores (empty: AWS)",
            None,
        )
        region = asker.get("--region", answers.region, "AWS region (empty: default)", None)
        storage = StorageConfig(
            url=storage_url, profile=profile, endpoint_url=endpoint, region=region
        )

    remote = asker.get(
        "--remote",
        answers.git_remote,
        "Git remote of the registry (empty: keep the registry local)",
        None,
    )
    ssh_key: str | None = None
    if remote:
        if answers.ssh_key is not None or (asker.ask is not None and _looks_like_ssh(remote)):
            ssh_key = asker.get(
                "--ssh-key", answers.ssh_key, "SSH key for the remote (empty: ssh's default)", None
            )
    elif answers.ssh_key:
        print("note: --ssh-key ignored: no Git remote", file=out)
    registry = RegistryConfig(remote=remote, ssh_key=Path(_abspath(ssh_key)) if ssh_key else None)

    watch_path = asker.get(
        "--watch",
        answers.watch_path,
        "Directory your training writes checkpoints to",
        None,
        required=True,
    )
    artifact = asker.get(
        "--artifact",
        answers.artifact,
        "Artifact name for these checkpoints (e.g. vision/resnet50)",
        None,
        required=True,
        check=_check_artifact,
    )
    kind = asker.get(
        "--kind", answers.kind, "Kind (model or data)", "model", required=True, check=_check_kind
    )
    assert watch_path is not None and artifact is not None and kind is not None
    watch = WatchConfig(path=Path(_abspath(watch_path)), artifact=artifact, kind=kind)
    return Config(registry=registry, storage=storage, watches=(watch,))


def _write_private(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` atomically, mode 0600; never replace an existing file unless forced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the file appeared meanwhile: no silent overwrite
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise ConfigError(f"{path}: already exists; use --force to overwrite it") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_wizard(answers: WizardAnswers, ask: Ask | None, out: TextIO) -> Path:
    """Build, check and write a config; return the path written.

    Raises ``ConfigError`` for bad or missing answers and an existing file without
    ``force``; ``InitFailed`` when the checks fail (nothing is written unless ``force``).
    """
    asker = _Asker(ask, out)
    config_path = answers.config_path
    if config_path is None:
        default = str(paths.default_config_file())
        chosen = asker.get("--config", None, "Write the config to", default, required=True)
        assert chosen is not None
        config_path = Path(chosen)
    config_path = Path(_abspath(str(config_path)))
    if config_path.exists() and not answers.force:
        raise ConfigError(f"{config_path}: already exists; use --force to overwrite it")

    built = _build(answers, asker, out)
    text = dump_config(built)
    cfg = parse_config(text, config_path)  # the same validation `cpvd run` will apply

    print("Checking…", file=out)
    results = run_checks(cfg)
    print(format_results(results), file=out)
    if not all(r.ok for r in results):
        if not answers.force:
            raise InitFailed(
                f"{config_path}: not written because a check failed; fix the answer above "
                "or use --force to write it anyway"
            )
        print("--force: writing the config although a check failed", file=out)

    _write_private(config_path, text, force=answers.force)
    print(f"wrote {config_path}", file=out)
    flag = (
        ""
        if config_path == Path(_abspath(str(paths.default_config_file())))
        else (f" --config {config_path}")
    )
    print(
        f"next: `cpvd run{flag}` to start in the foreground, "
        f"or `cpvd service install{flag}` to run it as a service",
        file=out,
    )
    return config_path


__all__ = ["Ask", "InitFailed", "WizardAnswers", "run_wizard"]
