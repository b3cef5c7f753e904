"""One registry's view of the config: what its worker, pusher, engine and lifecycle see.

With ``[[registry]]`` profiles each registry runs its own lane (cpvd.pipeline.lane); every
component of a lane reads a :class:`Config` whose ``registry``, ``storage`` and ``watches``
are that registry's, so none of them needs to know there are others. A single-registry
config is its own view.
"""

from __future__ import annotations

import dataclasses

from cpvd.config.model import Config, RegistryConfig, StorageConfig
from cpvd.errors import ConfigError


def registry_names(cfg: Config) -> list[str]:
    """The registries the daemon serves, in config order (one for the single tables)."""
    return [r.name for r in cfg.registries] or [cfg.registry.name]


def is_multi(cfg: Config) -> bool:
    return len(cfg.registries) > 1


def registry_of(cfg: Config, artifact: str) -> str:
    """The registry an artifact belongs to: its watch's, or that of a watch naming it as
    lineage data; an artifact no watch names belongs to the first registry."""
    names = registry_names(cfg)
    for w in cfg.watches:
        if w.artifact == artifact or artifact in w.data:
            return w.registry or names[0]
    return names[0]


def profile(cfg: Config, name: str) -> tuple[RegistryConfig, StorageConfig]:
    """The registry called ``name`` and its storage."""
    if not cfg.registries:
        return cfg.registry, cfg.storage
    registry = next(r for r in cfg.registries if r.name == name)
    storage = next(s for s in cfg.storages if s.name == registry.storage)
    return registry, storage


def view(cfg: Config, name: str) -> Config:
    """``cfg`` as the registry ``name`` sees it: its registry, storage and watches."""
    if not is_multi(cfg):
        return cfg
    registry, storage = profile(cfg, name)
    first = registry_names(cfg)[0]
    watches = tuple(w for w in cfg.watches if (w.registry or first) == name)
    return dataclasses.replace(cfg, registry=registry, storage=storage, watches=watches)


def artifacts_of(cfg: Config, name: str) -> frozenset[str]:
    """The artifacts (watched, and lineage data) the registry ``name`` holds."""
    return frozenset(view(cfg, name).artifact_kinds())


def keep_profiles(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` on the running registry profiles (each lane opened its registry and storage
    once, at start: a SIGHUP cannot move them), and what only a restart would apply: the
    changed profiles, and the watches that name a registry not running (left out)."""
    changed = [
        f"[[{table}]] {name}"
        for table, old, now in (
            ("registry", running.registries, new.registries),
            ("storage", running.storages, new.storages),
        )
        for name in sorted({p.name for p in (*old, *now)})
        if {p.name: p for p in old}.get(name) != {p.name: p for p in now}.get(name)
    ]
    names = set(registry_names(running))
    kept = tuple(w for w in new.watches if w.registry is None or w.registry in names)
    changed += [f"[[watch]] {w.artifact} registry" for w in new.watches if w not in kept]
    applied = dataclasses.replace(
        new, registries=running.registries, storages=running.storages, watches=kept
    )
    return applied, changed


def chosen(cfg: Config, name: str | None) -> Config:
    """The view of the registry a one-registry command (``migrate-storage``) is told to
    work on: ``--registry NAME``, needed when there are several."""
    names = registry_names(cfg)
    if name is None and len(names) > 1:
        raise ConfigError(
            f"{cfg.source}: several [[registry]] tables; say which with --registry "
            f"({', '.join(names)})"
        )
    if name is not None and name not in names:
        raise ConfigError(f"--registry: no registry is named {name!r} (known: {', '.join(names)})")
    return view(cfg, name or names[0])
