"""One page of an artifact's versions: sorted, sliced and trimmed to the fields asked for.

Why: the local page (``cpvctl ui``) shows 10,000 versions as a table and a plot; sending all
of them for every view costs megabytes of JSON per click. The daemon sorts and slices the
list it already holds (cached per registry generation) and sends one page. Pure functions,
so each rule is tested without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cpvctl.protocol import ProtocolError

MAX_LIMIT = 10_000
#: sort keys besides ``metric:<key>``
SORT_KEYS = ("version", "created_at", "size", "md5", "source", "name")
#: fields a caller may keep (the rest of a version's JSON is dropped)
FIELDS = frozenset(
    (
        "artifact",
        "version",
        "tag",
        "md5",
        "size",
        "nfiles",
        "is_dir",
        "name",
        "source",
        "relpath",
        "kind",
        "host",
        "metrics",
        "lineage",
        "parent",
        "created_at",
        "stages",
        "current",
        "job_id",
        "commit",
        "cpv_version",
    )
)


@dataclass(frozen=True)
class PageRequest:
    offset: int = 0
    limit: int | None = None
    sort: str | None = None
    descending: bool = True
    fields: frozenset[str] | None = None


def _int(name: str, raw: str | None, lo: int, hi: int) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ProtocolError("bad_request", f"{name} must be a whole number from {lo} to {hi}")
    return int(raw)


def parse_page(
    offset: str | None,
    limit: str | None,
    sort: str | None,
    order: str | None,
    fields: str | None,
) -> PageRequest | None:
    """The page asked for by the query parameters; None when none was given (the whole list,
    as before paging existed)."""
    if all(v is None for v in (offset, limit, sort, order, fields)):
        return None
    if sort is not None and sort not in SORT_KEYS and not sort.startswith("metric:"):
        raise ProtocolError(
            "bad_request", f"sort must be one of {', '.join(SORT_KEYS)} or metric:<key>"
        )
    if order not in (None, "asc", "desc"):
        raise ProtocolError("bad_request", "order must be asc or desc")
    kept = None
    if fields:
        kept = frozenset(fields.split(","))
        unknown = sorted(kept - FIELDS)
        if unknown:
            raise ProtocolError("bad_request", f"unknown field(s) {', '.join(unknown)}")
    return PageRequest(
        offset=_int("offset", offset, 0, 10**9) or 0,
        limit=_int("limit", limit, 1, MAX_LIMIT),
        sort=sort or None,
        descending=order != "asc",
        fields=kept,
    )


def _version_key(text: object) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).lstrip("v").split("."))
    except ValueError:
        return (-1,)


def _metric_key(value: object) -> tuple[int, float, str]:
    """Numbers before text; a missing metric sorts as the lowest (last when descending)."""
    if isinstance(value, bool) or value is None:
        return (0, 0.0, "" if value is None else str(value))
    if isinstance(value, int | float):
        return (2, float(value), "")
    return (1, 0.0, str(value))


def _sort_key(sort: str) -> Any:
    if sort == "version":
        return lambda v: _version_key(v.get("version"))
    if sort.startswith("metric:"):
        key = sort.removeprefix("metric:")
        return lambda v: _metric_key((v.get("metrics") or {}).get(key))
    if sort == "size":
        return lambda v: v.get("size") or 0
    return lambda v: str(v.get(sort) or "")


def page(versions: list[dict[str, Any]], req: PageRequest) -> list[dict[str, Any]]:
    """``versions`` (newest first, as the registry lists them) sorted, sliced and trimmed."""
    rows = versions
    if req.sort is not None:
        rows = sorted(rows, key=_sort_key(req.sort), reverse=req.descending)
    elif not req.descending:
        rows = rows[::-1]
    end = None if req.limit is None else req.offset + req.limit
    rows = rows[req.offset : end]
    if req.fields is not None:
        kept = [k for k in sorted(req.fields)]
        rows = [{k: row[k] for k in kept if k in row} for row in rows]
    return rows
