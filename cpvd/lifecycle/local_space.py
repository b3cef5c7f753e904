"""``keep_local = N`` on a watch: delete the trainer's own checkpoints beyond the N newest.

Only a checkpoint that is certainly safe elsewhere goes: the ledger says this very content
(same size and mtime as now) became version V, V is pushed to the registry remote (or, with
no remote configured, committed to the local registry), and V holds no stage (``best``,
``prod``, ...). Anything else stays, however old: a checkpoint not yet versioned, one the
trainer rewrote since, a staged one. Deletion happens inside the watch directory only,
by name relative to its descriptor, without following a symlink (a link planted as a
checkpoint is never followed, nor one inside a checkpoint directory).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cpvd.state.ledger import LedgerEntry
from cpvd.watch.settle import is_ignored_name, signature_of, walk

#: ledger reasons that mean "this content at this path is version V"
DURABLE_REASONS = frozenset({"versioned", "unchanged", "pushed"})


@dataclass(frozen=True)
class Unit:
    """A checkpoint in a watch directory as it is now."""

    name: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Deletion:
    unit: Unit
    version: str


def units_in(watch: Path) -> list[Unit]:
    """The checkpoints (top-level entries) of ``watch``; links and ignored names skipped."""
    out = []
    try:
        names = os.listdir(watch)
    except OSError:
        return []
    for name in names:
        if is_ignored_name(name):
            continue
        files = walk(watch / name)  # None for a symlink or a special file
        if files:
            sig = signature_of(files)
            out.append(Unit(name, sig.size, sig.mtime_ns))
    return out


def choose(
    units: list[Unit],
    keep: int,
    handled: Mapping[str, LedgerEntry | None],
    durable: set[str],
    protected: set[str],
) -> list[Deletion]:
    """Which units go: beyond the ``keep`` newest (by mtime), and only when ``handled`` (the
    ledger's latest row per name) says their current content is a version in ``durable``
    and not in ``protected``. Pure."""
    if keep <= 0:
        return []
    newest_first = sorted(units, key=lambda u: (u.mtime_ns, u.name), reverse=True)
    out = []
    for unit in newest_first[keep:]:
        row = handled.get(unit.name)
        if row is None or row.reason not in DURABLE_REASONS or row.version is None:
            continue
        if (row.size, row.mtime_ns) != (unit.size, unit.mtime_ns):
            continue  # rewritten since it was versioned
        if row.version in durable and row.version not in protected:
            out.append(Deletion(unit, row.version))
    return out


def delete_unit(watch: Path, unit: Unit) -> bool:
    """Remove ``watch/<name>`` if it is still the unit chosen (not a link, same size and
    mtime), never following a symlink; False when it changed or vanished meanwhile."""
    fd = os.open(watch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            st = os.stat(unit.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        files = walk(watch / unit.name)
        if not files or signature_of(files)[:2] != (unit.size, unit.mtime_ns):
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(unit.name, dir_fd=fd)  # fd-based, symlink-attack resistant on Linux
        elif stat.S_ISREG(st.st_mode):
            os.unlink(unit.name, dir_fd=fd)
        else:
            return False
        return True
    finally:
        os.close(fd)
