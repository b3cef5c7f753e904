"""The registry checks ``cpvd run`` makes before it writes anything, and ``cpvd check``
reports: one function, so a check that passes means the daemon starts (the check used to say
"reachable" while the daemon's pushes failed on a remote it had never set up)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cpvd.config.model import Config
from cpvd.errors import ConfigError
from cpvd.registry.binding import storage_problem
from cpvd.registry.remote_setup import attach_remote, needs_attach, remote_problem


def registry_problems(cfg: Config, storage_settings: Mapping[str, str]) -> list[str]:
    """Everything that stops the registry from working with this config's storage (whose
    ``.dvc/config`` settings are ``storage_settings``) and Git remote; empty when fine."""
    problems: list[str] = []
    stored = storage_problem(Path(cfg.registry.path), storage_settings, cfg.source)
    if stored:
        problems.append(stored)
    if needs_attach(cfg.registry):
        remote = remote_problem(cfg.registry)
        if remote:
            problems.append(remote)
    return problems


def prepare_registry(cfg: Config, storage_settings: Mapping[str, str]) -> None:
    """Refuse (ConfigError naming what to do) or set the registry up for this config."""
    problems = registry_problems(cfg, storage_settings)
    if problems:
        raise ConfigError("\n".join(problems))
    if needs_attach(cfg.registry):
        attach_remote(cfg.registry)
