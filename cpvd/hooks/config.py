"""Reading ``[[hook]]`` tables: every mistake is a ConfigError naming the file, the hook and
the key, before the daemon starts (a hook silently never firing is worse than a refusal)."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cpvd.errors import ConfigError
from cpvd.hooks.model import DEFAULT_TIMEOUT, EVENT_TYPES, HookConfig

KEYS = ("name", "on", "exec", "url", "artifact", "timeout", "secret_env")
MAX_TIMEOUT = 3600.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _show(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


class _Hook:
    """One ``[[hook]]`` table being read; :meth:`error` says where."""

    def __init__(self, source: Path | str, number: int, data: dict[str, Any]) -> None:
        self.source, self.number, self.data = source, number, data

    def error(self, key: str | None, message: str) -> ConfigError:
        where = f"[[hook]] #{self.number}" + (f" {key}:" if key else "")
        return ConfigError(f"{self.source}: {where} {message}")

    def string(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {_show(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        good = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        if not good or not value:
            raise self.error(key, f"expected a list of non-empty strings, got {_show(value)}")
        return tuple(value)


def _name(h: _Hook) -> str:
    name = h.string("name") or f"hook-{h.number}"
    if not _NAME_RE.match(name):
        raise h.error("name", f"{_show(name)}: use letters, digits, '.', '_' and '-' (max 64)")
    return name


def _on(h: _Hook) -> tuple[str, ...]:
    on = h.strings("on")
    if not on:
        raise h.error("on", f"missing: name the events to act on, from {', '.join(EVENT_TYPES)}")
    for value in on:
        if value not in EVENT_TYPES:
            close = difflib.get_close_matches(value, EVENT_TYPES, n=1, cutoff=0.6)
            hint = f" (did you mean {_show(close[0])}?)" if close else ""
            raise h.error(
                "on", f"unknown event {_show(value)}{hint}; expected {', '.join(EVENT_TYPES)}"
            )
    return tuple(dict.fromkeys(on))


def _url(h: _Hook) -> str | None:
    url = h.string("url")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError as exc:
        raise h.error("url", f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise h.error("url", "must be an http:// or https:// URL with a host")
    return url


def _timeout(h: _Hook) -> float:
    value = h.data.get("timeout", DEFAULT_TIMEOUT)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or math.isnan(value) or not 0 < value <= MAX_TIMEOUT:
        raise h.error("timeout", f"expected seconds in (0, {MAX_TIMEOUT:.0f}], got {_show(value)}")
    return float(value)


def _secret_env(h: _Hook, url: str | None) -> str | None:
    name = h.string("secret_env")
    if name is None:
        return None
    if url is None:
        raise h.error("secret_env", "signs a webhook's body: it needs url, not exec")
    if not _ENV_RE.match(name):
        raise h.error("secret_env", f"must name an environment variable, got {_show(name)}")
    return name


def _target(h: _Hook) -> tuple[tuple[str, ...], str | None]:
    argv = h.strings("exec")
    url = _url(h)
    if argv is not None and url is not None:
        raise h.error("exec", "and url are both set: a hook runs a program or posts, not both")
    if argv is None and url is None:
        raise h.error(None, "needs exec (a program and its arguments) or url (a webhook)")
    return argv or (), url


def parse_hook(data: object, source: Path | str, number: int) -> HookConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [[hook]] #{number} must be a table, got {_show(data)}")
    h = _Hook(source, number, data)
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise h.error(None, f"unknown key '{key}'{hint}")
    argv, url = _target(h)
    return HookConfig(
        name=_name(h),
        on=_on(h),
        exec=argv,
        url=url,
        artifact=h.string("artifact"),
        timeout=_timeout(h),
        secret_env=_secret_env(h, url),
    )


def parse_hooks(raw: object, source: Path | str) -> tuple[HookConfig, ...]:
    """Every ``[[hook]]`` of a config document, names unique; every problem reported at once
    (one ConfigError, a line each), as the rest of the config's are."""
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: [hook] must be an array of tables: write [[hook]]")
    hooks: list[HookConfig] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for i, data in enumerate(raw, start=1):
        try:
            hook = parse_hook(data, source, i)
        except ConfigError as exc:
            problems.append(exc.message)
            continue
        if hook.name in first:
            problems.append(
                _Hook(source, i, {}).error(
                    "name", f"{_show(hook.name)} is already used by [[hook]] #{first[hook.name]}"
                ).message
            )
        first.setdefault(hook.name, i)
        hooks.append(hook)
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(hooks)


def dump_hook(hook: HookConfig) -> dict[str, object]:
    """A hook as a TOML table that :func:`parse_hook` reads back to an equal one."""
    table: dict[str, object] = {"name": hook.name, "on": list(hook.on)}
    optional: dict[str, Callable[[], object]] = {
        "exec": lambda: list(hook.exec) if hook.exec else None,
        "url": lambda: hook.url,
        "artifact": lambda: hook.artifact,
        "timeout": lambda: hook.timeout if hook.timeout != DEFAULT_TIMEOUT else None,
        "secret_env": lambda: hook.secret_env,
    }
    for key, get in optional.items():
        value = get()
        if value is not None:
            table[key] = value
    return table
