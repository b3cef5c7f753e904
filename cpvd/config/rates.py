"""Byte rates as the config holds them: ``[storage] max_upload_rate = "200MiB"`` (per
second). Decimal (``MB``) and binary (``MiB``) units, an optional ``/s``, or a plain integer
of bytes per second; the loader turns a ValueError into an error naming the key."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
}  # fmt: skip
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*?)\s*(?:/\s*s)?\s*$")


def parse_rate(value: object) -> int:
    """Bytes per second from ``"200MiB"``, ``"50MB"``, ``"1.5GiB/s"`` or a plain integer.

    ValueError with the accepted forms otherwise (the config loader names the key)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a rate such as \"200MiB\" or an integer, got {value}")
    if isinstance(value, int):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _RATE_RE.match(value)):
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise ValueError(
            f"expected bytes per second such as \"200MiB\", \"50MB\" or an integer, got {value!r}"
        )
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} in {value!r}: use B, KB, MB, GB, KiB, MiB or GiB")
    rate = int(number * _UNITS[unit])
    if rate <= 0:
        raise ValueError(f"must be more than 0 bytes per second, got {value!r}")
    return rate
