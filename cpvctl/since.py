"""``cpvctl events --since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``,
``1h30m``) or a point in time (ISO 8601, ``2026-03-04T05:06``; local time unless it names
a zone), turned into the Unix time the daemon filters on."""

from __future__ import annotations

import re
import time

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?[smhd])+$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")

HELP = "a duration back from now (30s, 10m, 2h, 1d, 1h30m) or an ISO time (2026-03-04T05:06)"


def parse_duration(text: str) -> float | None:
    """Seconds in ``text`` (``1h30m`` -> 5400), or None when it is not a duration."""
    compact = text.strip().lower()
    if not _DURATION_RE.match(compact):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART_RE.findall(compact))


def parse_since(text: str, now: float | None = None) -> float:
    """The Unix time ``text`` names; ValueError (with what is accepted) otherwise."""
    now = time.time() if now is None else now
    seconds = parse_duration(text)
    if seconds is not None:
        return now - seconds
    from datetime import datetime  # only here: cpvctl's start-up stays cheap

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected {HELP}") from None
    return moment.timestamp()  # a naive time is local time, as the user reads a clock


def since_arg(text: str) -> float:
    """argparse ``type=`` for ``--since`` (a usage error, exit 2, names what is accepted)."""
    import argparse

    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
