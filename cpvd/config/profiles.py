"""Rules that span ``[[registry]]`` and ``[[storage]]`` profiles and the watches naming them.

Several teams on one machine: each ``[[registry]]`` names its ``[[storage]]``, each watch
its registry. Artifact names stay unique per daemon, so the API and ``cpvctl`` route an
artifact to its registry without new syntax. Returns problems as lines (all at once), in the
form ``cpvd.config.load`` uses: the table, its number and the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cpvd.config.model import Config, RegistryConfig, StorageConfig, WatchConfig
from cpvd.errors import ConfigError

#: reads one table (``"registry"`` or ``"storage"``, its number, its keys) like the single
#: form; None when it had problems (already added to the errors)
BuildOne = Callable[[str, int, Mapping[str, Any]], object | None]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _q(value: object) -> str:
    return json.dumps(str(value))


def _duplicates(names: Sequence[str], table: str) -> list[str]:
    first: dict[str, int] = {}
    out = []
    for i, name in enumerate(names, start=1):
        if name in first:
            out.append(
                f"[[{table}]] #{i} name: {_q(name)} is already the name of [[{table}]] "
                f"#{first[name]} (each profile needs its own name)"
            )
        first.setdefault(name, i)
    return out


def _registry_problems(
    registries: Sequence[RegistryConfig], storages: Sequence[StorageConfig]
) -> list[str]:
    by_name = {s.name: s for s in storages}
    out = []
    first_path: dict[Path, int] = {}
    first_url: dict[str, int] = {}
    for i, r in enumerate(registries, start=1):
        where = f"[[registry]] #{i}"
        if r.path in first_path:
            out.append(
                f"{where} path: {_q(r.path)} is already the path of [[registry]] "
                f"#{first_path[r.path]} (each registry needs its own directory)"
            )
        first_path.setdefault(r.path, i)
        if r.storage is None:
            out.append(f'{where}: missing required key \'storage\' (the name of a [[storage]])')
            continue
        storage = by_name.get(r.storage)
        if storage is None:
            known = ", ".join(_q(n) for n in by_name) or "none"
            out.append(f"{where} storage: no [[storage]] is named {_q(r.storage)} (known: {known})")
            continue
        url = storage.url.rstrip("/")
        if url in first_url:
            out.append(
                f"{where} storage: {_q(storage.url)} already holds the objects of [[registry]] "
                f"#{first_url[url]} (one storage per registry: give each its own bucket or prefix)"
            )
        first_url.setdefault(url, i)
    return out


def _watch_problems(
    registries: Sequence[RegistryConfig], watches: Sequence[WatchConfig]
) -> list[str]:
    names = list(dict.fromkeys(r.name for r in registries))
    out = []
    owner: dict[str, tuple[str, int]] = {}
    for i, w in enumerate(watches, start=1):
        where = f"[[watch]] #{i}"
        if w.registry is None and len(names) > 1:
            out.append(
                f"{where}: missing key 'registry' (several [[registry]] tables: "
                f"name one of {', '.join(_q(n) for n in names)})"
            )
            continue
        if w.registry is not None and w.registry not in names:
            out.append(
                f"{where} registry: no [[registry]] is named {_q(w.registry)} "
                f"(known: {', '.join(_q(n) for n in names) or 'none'})"
            )
            continue
        reg = w.registry or names[0]
        for artifact in (w.artifact, *w.data):
            seen = owner.setdefault(artifact, (reg, i))
            if seen[0] != reg:
                out.append(
                    f"{where} registry: artifact {_q(artifact)} is already in registry "
                    f"{_q(seen[0])} ([[watch]] #{seen[1]}); artifact names are unique per "
                    "daemon: rename one"
                )
    return out


def profile_problems(
    registries: Sequence[RegistryConfig],
    storages: Sequence[StorageConfig],
    watches: Sequence[WatchConfig],
) -> list[str]:
    """Everything wrong with the profiles and the watches' ``registry`` keys."""
    return [
        *_duplicates([r.name for r in registries], "registry"),
        *_duplicates([s.name for s in storages], "storage"),
        *_registry_problems(registries, storages),
        *_watch_problems(registries, watches),
    ]


def single_problems(
    registry: RegistryConfig, storage: StorageConfig, watches: Sequence[WatchConfig]
) -> list[str]:
    """A config with the single ``[registry]``/``[storage]`` tables: the profile keys that
    only mean something with several registries name what to write instead."""
    out = []
    if registry.storage is not None:
        out.append(
            "[registry] storage: only a [[registry]] table names a [[storage]] profile; "
            "the [storage] table is this registry's storage"
        )
    for i, w in enumerate(watches, start=1):
        if w.registry is not None and w.registry != registry.name:
            out.append(
                f"[[watch]] #{i} registry: no registry is named {_q(w.registry)} (this "
                f"config has one, {_q(registry.name)}; define several with [[registry]])"
            )
    return out


def read_profiles(
    doc: Mapping[str, Any], source: Path | str, build_one: BuildOne, errors: list[ConfigError]
) -> dict[str, list[Any]]:
    """``[[registry]]`` and ``[[storage]]`` tables, by table name (absent: single form)."""
    out: dict[str, list[Any]] = {}
    for table in ("registry", "storage"):
        items = doc.get(table)
        if not isinstance(items, list):
            continue
        if not items:
            errors.append(ConfigError(f"{source}: [[{table}]] is empty: write at least one table"))
        out[table] = []
        for i, data in enumerate(items, 1):
            problem = _name_problem(data)
            if problem is not None:
                errors.append(ConfigError(f"{source}: [[{table}]] #{i} {problem}"))
                continue
            built = build_one(table, i, data)
            if built is not None:
                out[table].append(built)
    if len(out) == 1:
        table, other = ("registry", "storage") if "registry" in out else ("storage", "registry")
        errors.append(ConfigError(
            f"{source}: [[{table}]] profiles need [[{other}]] profiles too: write "
            "[[registry]] tables that each name a [[storage]] (or single [registry] and "
            "[storage] tables)"
        ))  # fmt: skip
    return out


def _name_problem(data: object) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return "missing required key 'name' (a string)"
    if not _NAME.fullmatch(data["name"]):
        return f"name: must be letters, digits, '-', '_' or '.', got {_q(data['name'])}"
    return None


def refuse_profile_problems(
    parts: dict[str, Any],
    profiles: dict[str, list[Any]],
    watches: list[WatchConfig],
    source: Path | str,
) -> None:
    """The profile rules, all at once; with profiles, the first registry (and its storage)
    also fills the single ``registry``/``storage`` fields every older reader uses."""
    if profiles:
        regs, stores = profiles["registry"], profiles["storage"]
        found = profile_problems(regs, stores, watches)
        if not found:
            parts["registry"] = regs[0]
            parts["storage"] = next(s for s in stores if s.name == regs[0].storage)
    else:
        found = single_problems(parts["registry"], parts["storage"], watches)
    if found:
        raise ConfigError("\n".join(f"{source}: {p}" for p in found))


def refuse_flag_watch(cfg: Config) -> None:
    """``cpvd run --watch`` cannot say which of several registries the watch is for."""
    if len(cfg.registries) > 1:
        raise ConfigError(
            f"--watch: {cfg.source} has several [[registry]] tables; add the watch there "
            "with registry = NAME instead"
        )
