"""Collecting config problems, so a file with three mistakes reports three, not one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cpvd.errors import ConfigError


def joined(errors: list[ConfigError]) -> ConfigError:
    """Several problems as one error, one line each, so a user fixes them in one go."""
    return errors[0] if len(errors) == 1 else ConfigError("\n".join(e.message for e in errors))


def collect(
    errors: list[ConfigError], into: dict[str, Any], key: str, build: Callable[[], object]
) -> None:
    """``into[key] = build()``, or the ConfigError it raises appended to ``errors``."""
    try:
        into[key] = build()
    except ConfigError as exc:
        errors.append(exc)
