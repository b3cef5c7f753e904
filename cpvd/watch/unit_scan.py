"""Walk a watch path and sort what it holds into checkpoint units and ignored files.

The rescan (``settle.Tracker.scan``) takes the units; ``cpvctl status --ignored`` takes the
rest, each with the reason, so a user sees why a file was not versioned. Symlinks are never
followed (a link is not a unit: the file it points at is versioned where it lives) and a
directory unit is not entered: it is one version, whatever it holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cpvd.watch.units import UnitRules

#: ignored files listed per watch at most (a dataset of a million shards must not flood status)
MAX_IGNORED = 1000


@dataclass
class UnitScan:
    units: list[Path] = field(default_factory=list)
    #: (path relative to the watch, reason); directories end in "/"
    ignored: list[tuple[str, str]] = field(default_factory=list)
    #: more ignored files than listed
    truncated: bool = False


def find_units(root: Path, rules: UnitRules, *, ignored: bool = False) -> UnitScan:
    """Every unit below ``root`` (sorted); with ``ignored``, also what is not part of one."""
    out = UnitScan()
    _visit(Path(os.path.normpath(os.fspath(root))), "", rules, out, ignored)
    out.units.sort()
    return out


def _visit(d: Path, rel: str, rules: UnitRules, out: UnitScan, want_ignored: bool) -> None:
    _sort(_listing(d), rel, rules, out, want_ignored)


def _listing(d: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def _sort(
    entries: list[os.DirEntry[str]], rel: str, rules: UnitRules, out: UnitScan, want: bool
) -> None:
    for e in entries:
        r = f"{rel}/{e.name}" if rel else e.name
        try:
            # the kinds come from the listing (d_type): no stat per file
            kind = "link" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False) else ""
            kind = kind or ("file" if e.is_file(follow_symlinks=False) else "other")
        except OSError:
            continue  # vanished meanwhile
        reason = _classify(Path(e.path), r, kind, rules, out, want)
        if reason is not None and want:
            _note(out, r + ("/" if kind == "dir" else ""), reason)


def _classify(
    p: Path, rel: str, kind: str, rules: UnitRules, out: UnitScan, want: bool
) -> str | None:
    """Record ``p`` as a unit or descend into it; the reason when it is ignored."""
    if kind == "link":
        return "symlink (the file it points at is versioned where it lives)"
    if kind == "other":
        return "not a regular file"
    why = rules.pruned(rel, kind == "dir")
    if why is not None:
        return why
    if kind == "file":
        if rules.is_file_unit(rel):
            out.units.append(p)
            return None
        return rules.file_reason(rel)
    if rules.layout == "entries":
        if rules.is_dir_unit(rel):
            out.units.append(p)
            return None
        return "not matched by include"
    children = _listing(p)
    if rules.is_dir_unit(rel, [c.name for c in children]):
        out.units.append(p)
        return None
    _sort(children, rel, rules, out, want)
    return None


def _note(out: UnitScan, rel: str, reason: str) -> None:
    if len(out.ignored) >= MAX_IGNORED:
        out.truncated = True
        return
    out.ignored.append((rel, reason))
