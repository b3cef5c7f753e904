"""Walk a watch path and sort what it holds into checkpoint units and ignored files.

The rescan (``settle.Tracker.scan``) takes the units; ``cpvctl status --ignored`` takes the
rest, each with the reason, so a user sees why a file was not versioned. Symlinks are never
followed (a link is not a unit: the file it points at is versioned where it lives) and a
directory unit is not entered: it is one version, whatever it holds.
"""

from __future__ import annotations

import os
import stat
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


def find_units(root: Path, rules: UnitRules, *, ignored: bool = False, below: str = "") -> UnitScan:
    """Every unit below ``root`` (sorted); with ``ignored``, also what is not part of one.
    ``below``: walk only that directory (relative to ``root``; the path above it unchecked)."""
    out = UnitScan()
    top = Path(os.path.normpath(os.fspath(root)))
    _visit(top / below if below else top, below, rules, out, ignored)
    out.units.sort()
    return out


def _visit(d: Path, rel: str, rules: UnitRules, out: UnitScan, want_ignored: bool) -> None:
    try:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        r = f"{rel}/{e.name}" if rel else e.name
        try:
            mode = e.stat(follow_symlinks=False).st_mode
        except OSError:
            continue  # vanished meanwhile
        reason = _classify(Path(e.path), r, mode, rules, out, want_ignored)
        if reason is not None and want_ignored:
            _note(out, r + ("/" if stat.S_ISDIR(mode) else ""), reason)


def _classify(
    p: Path, rel: str, mode: int, rules: UnitRules, out: UnitScan, want_ignored: bool
) -> str | None:
    """Record ``p`` as a unit or descend into it; the reason when it is ignored."""
    if stat.S_ISLNK(mode):
        return "symlink (the file it points at is versioned where it lives)"
    is_dir = stat.S_ISDIR(mode)
    if not is_dir and not stat.S_ISREG(mode):
        return "not a regular file"
    why = rules.pruned(rel, is_dir)
    if why is not None:
        return why
    if not is_dir:
        if rules.is_file_unit(rel):
            out.units.append(p)
            return None
        return rules.file_reason(rel)
    if rules.is_dir_unit(rel, _names(p) if rules.layout == "auto" else ()):
        out.units.append(p)
        return None
    if rules.layout == "entries":
        return "not matched by include"
    _visit(p, rel, rules, out, want_ignored)
    return None


def _names(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def _note(out: UnitScan, rel: str, reason: str) -> None:
    if len(out.ignored) >= MAX_IGNORED:
        out.truncated = True
        return
    out.ignored.append((rel, reason))
