"""Write a Config back as TOML (``cpvd init``): only what differs from the defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tomli_w

from cpvd.config.lifecycle import BestConfig, KeepConfig, as_toml
from cpvd.config.model import (
    Config,
    DaemonConfig,
    RegistryConfig,
    RetentionConfig,
    StorageConfig,
    WatchConfig,
)
from cpvd.hooks.config import dump_hook


def _plain(value: object) -> object:
    """A config value as TOML knows it: paths become strings, tuples arrays."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BestConfig | KeepConfig):
        return as_toml(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _changed(obj: object, default: object, always: tuple[str, ...] = ()) -> dict[str, object]:
    """Every field that is set and differs from the default (``always``: written anyway)."""
    table: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if value is not None and (f.name in always or value != getattr(default, f.name)):
            table[f.name] = _plain(value)
    return table


def dump_config(cfg: Config) -> str:
    """``cfg`` as TOML that ``parse_config`` reads back to an equal Config.

    Only values that differ from the embedded defaults are written (plus the storage url,
    so a reader sees where checkpoints go); defaults such as the socket path depend on
    the machine and the user, and pinning them would make the file less portable. The TOML
    itself (quoting, escapes, arrays of tables) is tomli-w's: a hand-written emitter is one
    more place for an escape bug.
    """
    doc: dict[str, object] = {}
    for name, table in (
        ("daemon", _changed(cfg.daemon, DaemonConfig())),
        ("registry", _changed(cfg.registry, RegistryConfig())),
        ("storage", _changed(cfg.storage, StorageConfig(), always=("url",))),
        ("retention", _changed(cfg.retention, RetentionConfig())),
    ):
        if table:
            doc[name] = table
    if cfg.registries:  # several teams: profiles by name (cpvd.config.profiles)
        doc["registry"] = [
            _changed(r, RegistryConfig(), always=("name", "path", "storage"))
            for r in cfg.registries
        ]
        doc["storage"] = [
            _changed(st, StorageConfig(), always=("name", "url")) for st in cfg.storages
        ]
    if cfg.watches:
        doc["watch"] = [
            _changed(w, WatchConfig(path=w.path, artifact=w.artifact), always=("path", "artifact"))
            for w in cfg.watches
        ]
    if cfg.hooks:
        doc["hook"] = [dump_hook(h) for h in cfg.hooks]
    header = "# cpvd configuration (see `cpvd check --config THIS_FILE`)\n\n"
    return header + tomli_w.dumps(doc)
