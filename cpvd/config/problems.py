"""Collecting config problems, so a file with three mistakes reports three, not one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cpvd.errors import ConfigError


def joined(errors: list[ConfigError]) -> ConfigError:
    """Several problems as one error, one line each, so a user fixes them in one go."""
    return errors[0] if len(errors) == 1 else ConfigError("\n".join(e.message for e in errors))


def collect(
    errors: list[ConfigError],
    into: dict[str, Any],
    key: str,
    build: Callable[[], object],
    pending: list[ConfigError],
) -> None:
    """``into[key] = build()`` when it raises nothing and leaves ``pending`` (the problems
    it noted without stopping) empty; otherwise all of them are added to ``errors``."""
    try:
        value = build()
    except ConfigError as exc:
        errors.extend(pending)
        errors.append(exc)
        return
    if pending:
        errors.extend(pending)
    else:
        into[key] = value
