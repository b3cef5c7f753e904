"""Reading, validating and writing the daemon's TOML config.

Everything that is wrong with a config file is reported before the daemon starts, as one
``ConfigError`` whose message names the file, the table and the key, because a daemon that
starts on a typo and silently ignores a watch is worse than one that refuses to start.

The accepted keys are exactly the fields of the dataclasses in ``cpvd.config.model``; the types
are read from their annotations, so a new field is configurable without touching this file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import cpvd.hooks.config as hook_tables
from cpvctl.protocol import ProtocolError, validate_name
from cpvd.config import paths
from cpvd.config.lifecycle import KeyedError, parse_best, parse_keep
from cpvd.config.model import (
    DEFAULT_SETTLE_SECONDS,
    Config,
    DaemonConfig,
    RegistryConfig,
    RetentionConfig,
    StorageConfig,
    WatchConfig,
)
from cpvd.config.overlap import overlap_problems
from cpvd.config.problems import collect as _collect
from cpvd.config.problems import joined as _joined
from cpvd.config.profiles import read_profiles, refuse_flag_watch, refuse_profile_problems
from cpvd.config.rates import parse_rate
from cpvd.config.urls import check_storage_url as _check_storage_url
from cpvd.errors import ConfigError
from cpvd.watch.units import LAYOUTS, glob_problem

KINDS = ("model", "data")
#: AF_UNIX paths are limited to 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
#: S3 rejects multipart parts smaller than 5 MiB (except the last).
MIN_PART_SIZE_MB = 5

_TABLES: dict[str, type] = {
    "daemon": DaemonConfig,
    "registry": RegistryConfig,
    "storage": StorageConfig,
    "retention": RetentionConfig,
}
_TOP_LEVEL = (*_TABLES, "watch")


class _Where:
    """Formats error locations: ``/etc/cpv.toml: [[watch]] #2 settle_seconds: ...``."""

    def __init__(self, source: Path | str, section: str) -> None:
        self.source = source
        self.section = section
        #: problems found so far that did not stop reading the table (reported together)
        self.pending: list[ConfigError] = []

    def soft(self, check: Callable[[], object]) -> None:
        """Run a rule; its ConfigError joins :attr:`pending` instead of stopping the table."""
        try:
            check()
        except ConfigError as exc:
            self.pending.append(exc)

    def raise_pending(self) -> None:
        if self.pending:
            errors = list(self.pending)
            self.pending.clear()  # the same list the caller holds: reported once, here
            raise _joined(errors)

    def error(self, key: str | None, message: str) -> ConfigError:
        where = f"{self.section} {key}:" if key else f"{self.section}"
        return ConfigError(f"{self.source}: {where} {message}")


def _show(value: object) -> str:
    """A value as the user wrote it in TOML (strings in double quotes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _suggest(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------- type conversion


def _expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    return value


def _expect_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_show(value)}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"expected a finite number, got {_show(value)}")
    return float(value)


def _expect_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_show(value)}")
    return value


def _expect_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def _expect_path(value: object) -> Path:
    text = _expect_str(value)
    if not text:
        raise ValueError("expected a path, got an empty string")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path (or start with ~), got {_show(text)}")
    return path


def _converter(hint: object) -> Callable[[object], object]:
    """The checker for one dataclass field annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            # TOML has no null: a present key always has a value.
            return _converter(inner[0])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _converter(args[0])

        def convert_tuple(value: object) -> tuple[object, ...]:
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {_show(value)}")
            out = []
            for i, v in enumerate(value):
                try:
                    out.append(item(v))
                except ValueError as exc:
                    raise ValueError(f"item {i + 1}: {exc}") from None
            return tuple(out)

        return convert_tuple
    simple: dict[object, Callable[[object], object]] = {
        str: _expect_str,
        float: _expect_number,
        int: _expect_int,
        bool: _expect_bool,
        Path: _expect_path,
    }
    if hint in simple:
        return simple[hint]
    raise RuntimeError(f"cpvd.config.load cannot read a field of type {hint!r}")


def _read_table(cls: type, data: Mapping[str, Any], where: _Where) -> dict[str, Any]:
    """Check keys and types of one table against the dataclass ``cls``; return kwargs."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            where.pending.append(where.error(None, f"unknown key '{key}'{_suggest(key, names)}"))
            continue
        try:
            kwargs[key] = _converter(hints[key])(value)
        except ValueError as exc:
            where.pending.append(where.error(key, str(exc)))
    return kwargs  # the keys that were read; the others' problems are in where.pending


def _at_least(kwargs: dict[str, Any], key: str, low: float, where: _Where, *, strict: bool) -> None:
    if key in kwargs:
        v = kwargs[key]
        if v < low or (strict and v == low):
            word = "greater than" if strict else "at least"
            raise where.error(key, f"must be {word} {_show(low)}, got {_show(v)}")


def _daemon(data: Mapping[str, Any], where: _Where) -> DaemonConfig:
    kw = _read_table(DaemonConfig, data, where)
    _at_least(kw, "rescan_seconds", 0, where, strict=True)
    _at_least(kw, "drain_timeout", 0, where, strict=False)
    _at_least(kw, "snapshot_limit_bytes", 0, where, strict=False)
    _at_least(kw, "retry_max_seconds", 0, where, strict=True)
    if not 0 <= kw.get("nice", 0) <= 19:
        raise where.error("nice", f"must be 0 (off) to 19 (lowest priority), got {kw['nice']}")
    if any(uid < 0 for uid in kw.get("allow_uids", ())):
        raise where.error("allow_uids", f"uids must be >= 0, got {_show(list(kw['allow_uids']))}")
    if "allow_group" in kw and not kw["allow_group"]:
        raise where.error("allow_group", "must be a group name, got an empty string")
    sock = kw.get("socket")
    if sock is not None and len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        raise where.error(
            "socket", f"path is longer than {MAX_SOCKET_PATH} bytes (the AF_UNIX limit)"
        )
    return DaemonConfig(**kw)


def _registry(data: Mapping[str, Any], where: _Where) -> RegistryConfig:
    kw = _read_table(RegistryConfig, data, where)
    remote = kw.get("remote")
    if remote is not None:
        if not remote.strip():
            raise where.error("remote", "must be a Git URL or path, got an empty string")
        if remote.startswith("-"):
            raise where.error("remote", f"must not start with '-', got {_show(remote)}")
    return RegistryConfig(**kw)


def _storage(data: Mapping[str, Any], where: _Where) -> StorageConfig:
    rate = data.get("max_upload_rate")  # "200MiB" or an integer (cpvd.config.rates)
    kw = _read_table(StorageConfig, {k: v for k, v in data.items() if k != "max_upload_rate"},
                     where)  # fmt: skip
    try:
        kw["max_upload_rate"] = None if rate is None else parse_rate(rate)
    except ValueError as exc:
        where.pending.append(where.error("max_upload_rate", str(exc)))
    if "url" in kw:
        try:
            kw["url"] = _check_storage_url(kw["url"])
        except ValueError as exc:
            where.pending.append(where.error("url", str(exc)))
    endpoint = kw.get("endpoint_url")
    if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
        raise where.error(
            "endpoint_url", f"expected an http:// or https:// URL, got {_show(endpoint)}"
        )
    for key in ("profile", "region"):
        if key in kw and not kw[key].strip():
            raise where.error(key, "must not be empty (leave the key out instead)")
    for key, low, strict in (("part_size_mb", MIN_PART_SIZE_MB, False), ("concurrency", 1, False),
                             ("connect_timeout", 0, True), ("read_timeout", 0, True),
                             ("max_attempts", 1, False), ("stall_seconds", 0, True)):  # fmt: skip
        _at_least(kw, key, low, where, strict=strict)
    return StorageConfig(**kw)


def _retention(data: Mapping[str, Any], where: _Where) -> RetentionConfig:
    kw = _read_table(RetentionConfig, data, where)
    _at_least(kw, "grace_hours", 0, where, strict=False)
    _at_least(kw, "gc_interval", 0, where, strict=False)
    return RetentionConfig(**kw)


def _name(value: str, where: _Where, key: str) -> str:
    try:
        return validate_name(value)
    except ProtocolError as exc:
        raise where.error(key, exc.message) from None


def _watch(data: object, where: _Where) -> WatchConfig:
    if not isinstance(data, dict):
        raise where.error(None, f"must be a table, got {_show(data)}")
    lifecycle = {k: data[k] for k in ("best", "keep") if k in data}
    kw = _read_table(WatchConfig, {k: v for k, v in data.items() if k not in lifecycle}, where)
    kw.update(_lifecycle(lifecycle, where))
    for required in ("path", "artifact"):
        if required not in data:
            raise where.error(None, f"missing required key '{required}'")
    if "artifact" in kw:
        where.soft(partial(_name, kw["artifact"], where, "artifact"))
    kind = kw.get("kind", "model")
    if kind not in KINDS:
        where.pending.append(where.error("kind", f'must be "model" or "data", got {_show(kind)}'))
    data_names = [_name(d, where, "data") for d in kw.get("data", ())]
    kw["data"] = tuple(dict.fromkeys(data_names))  # order kept, repeats dropped
    if kw.get("artifact") in kw["data"]:
        raise where.error("data", f"lists the watch's own artifact {_show(kw['artifact'])}")
    where.soft(partial(_at_least, kw, "settle_seconds", 0, where, strict=False))
    where.soft(partial(_at_least, kw, "keep_local", 0, where, strict=False))
    where.soft(partial(_unit_keys, kw, where))
    where.raise_pending()
    return WatchConfig(**kw)


def _unit_keys(kw: dict[str, Any], where: _Where) -> None:
    """``layout``, ``include`` and ``exclude`` (what becomes a version: cpvd.watch.units)."""
    layout = kw.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise where.error("layout", f'must be "auto" or "entries", got {_show(layout)}')
    for key in ("include", "exclude"):
        for i, pattern in enumerate(kw.get(key, ()), start=1):
            problem = glob_problem(pattern)
            if problem is not None:
                raise where.error(key, f"item {i}: {problem}")


def _lifecycle(data: Mapping[str, object], where: _Where) -> dict[str, Any]:
    """The watch's ``best`` and ``keep`` tables (errors name ``best.mode``, ``keep.last``...)."""
    try:
        best = parse_best(data["best"]) if "best" in data else None
        keep = parse_keep(data["keep"], best) if "keep" in data else None
    except KeyedError as exc:
        raise where.error(exc.key, exc.message) from None
    return {k: v for k, v in (("best", best), ("keep", keep)) if v is not None}


def _cross_check(watches: list[WatchConfig], source: Path | str) -> None:
    """Rules that span watches: one watch per artifact and path; lineage names data."""
    first_by_artifact: dict[str, int] = {}
    first_by_path: dict[Path, int] = {}
    for i, w in enumerate(watches, start=1):
        where = _Where(source, f"[[watch]] #{i}")
        if w.artifact in first_by_artifact:
            raise where.error(
                "artifact",
                f"{_show(w.artifact)} is already watched by [[watch]] "
                f"#{first_by_artifact[w.artifact]} (one watch per artifact)",
            )
        first_by_artifact[w.artifact] = i
        if w.path in first_by_path:
            raise where.error(
                "path",
                f"{_show(str(w.path))} is already watched by [[watch]] #{first_by_path[w.path]}",
            )
        first_by_path[w.path] = i
    for i, w in enumerate(watches, start=1):
        for d in w.data:
            j = first_by_artifact.get(d)
            if j is not None and watches[j - 1].kind != "data":
                raise _Where(source, f"[[watch]] #{i}").error(
                    "data",
                    f"{_show(d)} is watched as a {watches[j - 1].kind} by [[watch]] #{j}; "
                    'lineage must name data artifacts (set kind = "data" there)',
                )


# ---------------------------------------------------------------- public API


def parse_config(text: str, source: Path | str) -> Config:
    """Parse and validate TOML ``text``; ``source`` is named in every error message."""
    try:
        doc = tomllib.loads(text)
        raw_hooks = doc.pop("hook", [])  # [[hook]] tables, read by cpvd.hooks.config
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    errors = [
        ConfigError(
            f"{source}: unknown table [{key}]{_suggest(key, _TOP_LEVEL)}; "
            "expected [daemon], [registry], [storage], [retention], [[watch]] and [[hook]]"
        )
        for key in doc
        if key not in _TOP_LEVEL
    ]
    parts: dict[str, Any] = {}
    builders: dict[str, Callable[[Mapping[str, Any], _Where], object]] = {
        "daemon": _daemon,
        "registry": _registry,
        "storage": _storage,
        "retention": _retention,
    }
    profiles = read_profiles(doc, source, partial(_profile, builders, source, errors), errors)
    for name, build in builders.items():
        table = doc.get(name, {})
        if name in profiles:
            continue
        if not isinstance(table, dict):
            errors.append(ConfigError(f"{source}: [{name}] must be a table, got {_show(table)}"))
            continue
        where = _Where(source, f"[{name}]")
        _collect(errors, parts, name, partial(build, table, where), where.pending)
    raw_watches = doc.get("watch", [])
    if not isinstance(raw_watches, list):
        errors.append(ConfigError(
            f"{source}: [watch] must be an array of tables: write [[watch]] before each "
            "watched directory"
        ))  # fmt: skip
        raw_watches = []
    built: dict[str, Any] = {}
    for i, w in enumerate(raw_watches, 1):
        where = _Where(source, f"[[watch]] #{i}")
        _collect(errors, built, str(i), partial(_watch, w, where), where.pending)
    if errors:  # every problem at once; the cross-checks need every table read
        raise _joined(errors)
    watches = list(built.values())
    _cross_check(watches, source)
    refuse_profile_problems(parts, profiles, watches, source)
    cfg = Config(
        daemon=parts["daemon"],
        registry=parts["registry"],
        storage=parts["storage"],
        watches=tuple(watches),
        retention=parts["retention"],
        hooks=hook_tables.parse_hooks(raw_hooks, source),
        source=Path(source) if isinstance(source, Path) else None,
        registries=tuple(profiles.get("registry", ())),
        storages=tuple(profiles.get("storage", ())),
    )
    _refuse_overlaps(cfg, source)
    return cfg


def _profile(
    builders: Mapping[str, Any], source: Path | str, errors: list[ConfigError], table: str,
    index: int, data: Mapping[str, Any],
) -> object | None:  # fmt: skip
    """One ``[[registry]]`` or ``[[storage]]`` table, read like its single form."""
    where = _Where(source, f"[[{table}]] #{index}")
    built: dict[str, Any] = {}
    _collect(errors, built, table, partial(builders[table], data, where), where.pending)
    return built.get(table)


def _refuse_overlaps(cfg: Config, source: Path | str) -> None:
    """Paths and artifact names that would overlap (cpvd.config.overlap), all at once."""
    problems = overlap_problems(cfg)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))


def load_config(path: Path | None = None) -> Config:
    """Load the config the daemon should run with.

    ``path`` (``--config``) wins, then ``CPV_CONFIG``, then the platformdirs default file.
    A file named by the user must exist; a missing *default* file means the embedded
    defaults with no watches, so ``cpvd run`` works on a fresh machine.
    """
    explicit = path is not None or bool(os.environ.get("CPV_CONFIG"))
    target = (path if path is not None else paths.default_config_file()).expanduser()
    target = target.absolute()
    if not target.exists() and not explicit:
        return Config()
    try:
        text = target.read_bytes().decode("utf-8")
    except FileNotFoundError:
        via = "--config" if path is not None else "CPV_CONFIG"
        raise ConfigError(f"{target}: config file not found (named by {via})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{target}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read config: {exc.strerror or exc}") from None
    return parse_config(text, target)


def config_from_flags(
    watch: Path,
    artifact: str,
    kind: str = "model",
    settle_seconds: float | None = None,
    base: Config | None = None,
) -> Config:
    """The config for ``cpvd run --watch DIR --artifact NAME``.

    Starts from ``base`` (a loaded ``--config``) or the embedded defaults. The flagged
    watch replaces a watch of the same artifact in ``base`` and is otherwise added, so a
    command-line watch always means exactly what it says.
    """
    try:
        validate_name(artifact)
    except ProtocolError as exc:
        raise ConfigError(f"--artifact: {exc.message}") from None
    if kind not in KINDS:
        raise ConfigError(f"--kind: must be model or data, got {kind!r}")
    if settle_seconds is not None and (
        math.isnan(settle_seconds) or math.isinf(settle_seconds) or settle_seconds < 0
    ):
        raise ConfigError(f"--settle: must be a number of seconds >= 0, got {settle_seconds}")
    cfg = base if base is not None else Config()
    refuse_flag_watch(cfg)
    new = WatchConfig(
        path=Path(os.path.abspath(watch.expanduser())),
        artifact=artifact,
        kind=kind,
        settle_seconds=DEFAULT_SETTLE_SECONDS if settle_seconds is None else settle_seconds,
    )
    watches = [w for w in cfg.watches if w.artifact != artifact]
    watches.append(new)
    _cross_check(watches, cfg.source or "command line")
    out = dataclasses.replace(cfg, watches=tuple(watches))
    _refuse_overlaps(out, cfg.source or "command line")
    return out
