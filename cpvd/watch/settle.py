"""When is a checkpoint complete? Pure decisions, no threads, time passed in.

The watcher feeds raw filesystem activity in; this module says which *checkpoint unit* the
activity belongs to (``cpvd.watch.units``: a top-level entry, or with the ``auto`` layout a
checkpoint file or trainer directory at any depth), and after a quiet period whether it is
ready to version. Modelled on syncthing's event aggregator (a quiet delay per path) and
git-annex's watcher (decisions separate from the event source), so every rule is
unit-testable with a fake clock.

Rules:

* Anything below a directory unit maps to it, so a directory checkpoint is one version, not
  one per file, and a file landing late in it (another rank's ``rng_state_N.pth``) re-arms
  its quiet period.
* Temporary names (``*.tmp``, ``*.part``, dot-files, ``tmp-checkpoint-*`` …), sidecars
  (``<file>.metrics.json``), DeepSpeed's ``latest`` marker and ``zero_to_fp32.py`` are never
  checkpoints. Inside a checkpoint directory every file counts.
* Symlinks are not checkpoints (Lightning's ``last.ckpt`` link would duplicate the file it
  points at); special files (fifos, sockets) never are (opening a fifo blocks).
* Ready = no activity for ``settle_seconds`` AND a fresh walk of the tree equals what the
  events told us (two looks agree: catches writes whose events were lost), AND
  ``formats.validate`` finds it complete, AND a third walk after validating still agrees
  (the verdict and the emitted signature describe the same tree). Invalid ones are
  reported as *waiting* with a reason and re-checked with backoff until they become valid
  (no max-wait: a torn file is never versioned). A close event is recorded but never
  required: a rename-in and a polling observer produce none.
* Once ready, a checkpoint is emitted once per signature; any later change re-arms it. Within
  one Tracker the same (path, signature) is never emitted twice, even if the path vanished and
  came back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from cpvd.retry import Backoff
from cpvd.watch import formats, proof
from cpvd.watch.pending import Pending
from cpvd.watch.unit_scan import find_units
from cpvd.watch.units import UnitRules, is_ignored_name, sidecar_owner, unit_of

__all__ = ["Tracker", "checkpoint_root", "is_ignored_name", "sidecar_owner", "walk"]

#: one unit per top-level entry: the Tracker's default (and the ``entries`` layout)
ENTRIES = UnitRules()

log = logging.getLogger(__name__)

#: a marker whose change can make a waiting checkpoint valid (DeepSpeed's ``latest``)
_POKE_NAMES: frozenset[str] = frozenset({"latest"})

#: bounds of the re-check interval of a waiting (invalid) checkpoint; activity re-arms sooner
MIN_RECHECK_SECONDS = 0.5
MAX_RECHECK_SECONDS = 30.0

Status = Literal["ready", "waiting"]
#: relpath ("" for a file checkpoint) -> (size, mtime_ns)
Files = dict[str, tuple[int, int]]


class Signature(NamedTuple):
    """What a checkpoint looked like: cheap to take, changes with any write, rename or delete.

    ``digest`` covers every file's relative path, size and mtime, so a rename inside a
    directory (DCP's ``.metadata.tmp`` -> ``.metadata``) changes it even when total size,
    newest mtime and file count do not.
    """

    size: int
    mtime_ns: int
    files: int
    digest: str


class Decision(NamedTuple):
    path: Path
    status: Status
    reason: str | None
    signature: Signature


class Hint(NamedTuple):
    """An early snapshot hint (:meth:`Tracker.hints`)."""

    path: Path
    what: Literal["offer", "drop"]
    signature: Signature | None
    #: the writer's last act was seen (a close after writing, a rename of a temporary
    #: name): a copy followed while written can be handed over (cpvd.pipeline.follow)
    sealed: bool = False


def checkpoint_root(watch_root: Path, path: Path, rules: UnitRules = ENTRIES) -> Path | None:
    """The checkpoint unit that ``path`` belongs to (see ``cpvd.watch.units``), or None for
    the root itself, paths outside it and names that are never units."""
    return unit_of(watch_root, path, rules)


def walk(path: Path) -> Files | None:
    """Stat a checkpoint tree: ``{relpath: (size, mtime_ns)}``; None when it is not one.

    None when ``path`` is missing, a symlink, or neither a regular file nor a directory.
    Inside a directory, file symlinks count by their target; directory symlinks and special
    files are skipped.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return {"": (st.st_size, st.st_mtime_ns)}
    if not stat.S_ISDIR(st.st_mode):
        return None
    files: Files = {}
    _walk_into(os.fspath(path), "", files)
    return files


def _walk_into(top: str, rel: str, files: Files) -> None:
    try:
        it = os.scandir(top)
    except OSError:
        return
    with it:
        for e in it:
            r = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    _walk_into(e.path, r, files)
                    continue
                st = e.stat(follow_symlinks=True)
            except OSError:
                continue  # vanished or dangling link: not part of the checkpoint now
            if stat.S_ISREG(st.st_mode):
                files[r] = (st.st_size, st.st_mtime_ns)


def empty_reason(files: Files) -> str | None:
    """An empty file or a directory with no files is never complete (a writer just made it)."""
    if not files:
        return "empty directory"
    if files.get("", (1, 0))[0] == 0 and len(files) == 1:
        return "empty file"
    return None


def signature_of(files: Files) -> Signature:
    h = hashlib.blake2b(digest_size=12)
    for rel in sorted(files):
        size, mtime = files[rel]
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return Signature(
        size=sum(s for s, _ in files.values()),
        mtime_ns=max((m for _, m in files.values()), default=0),
        files=len(files),
        digest=h.hexdigest(),
    )


@dataclass
class _Entry:
    files: Files
    last_change: float
    #: time of the next look; None when emitted and nothing changed since
    next_check: float | None
    closed_seen: bool = False
    reason: str | None = None
    #: the (signature, reason) last reported as waiting, so a report is made once per change
    reported: tuple[Signature, str] | None = None
    recheck: float = 0.0
    emitted: Signature | None = None
    #: offered for an early snapshot (see ``Tracker.hints``), not taken back since
    early: bool = False
    #: when it first failed its check (monotonic), for ``status``; None when not waiting
    waiting_since: float | None = None


class Tracker:
    """Settle tracking for one watch root.

    ``observe`` is fed by filesystem events, ``scan`` by rescans; ``due`` is called when
    ``next_due`` says so and returns the decisions. ``validate`` is injectable for tests.
    """

    def __init__(
        self,
        watch_root: Path,
        settle_seconds: float,
        validate: Callable[[Path], str | None] = formats.validate,
        rules: UnitRules = ENTRIES,
    ) -> None:
        self.watch_root = Path(os.path.normpath(os.fspath(watch_root)))
        #: which paths are units; replaced on a config reload (the next scan applies it)
        self.rules = rules
        self.settle_seconds = max(0.0, float(settle_seconds))
        self._validate = validate
        self._entries: dict[Path, _Entry] = {}
        self._emitted: set[tuple[Path, Signature]] = set()
        self._hints: list[Hint] = []

    # -- feeding ----------------------------------------------------------------------------

    def observe(
        self,
        path: Path,
        now: float,
        closed: bool = False,
        modified: bool = True,
        renamed: bool = False,
    ) -> Path | None:
        """Record filesystem activity at ``path``; returns the checkpoint it belongs to.

        Only the changed subtree is stat'ed (so writing N files into a directory costs O(N)
        stats, not O(N²)); the full walk happens once, when the quiet period ends.

        ``closed``: a writer closed ``path``; ``modified``: bytes were written to it (False
        only for events known not to write: a creation, a rename). Both decide the early
        snapshot hints (:meth:`hints`). ``renamed``: ``path`` was just renamed to its name
        from a temporary name inside the watch. A file unit closed or renamed that way may
        prove itself complete (cpvd.watch.proof): then it is looked at now, not after its
        quiet period.
        """
        cp = unit_of(self.watch_root, path, self.rules, self._entries.__contains__)
        if cp is None:
            self._observe_other(Path(os.path.normpath(os.fspath(path))), now)
            return None
        entry = self._entries.get(cp)
        at_unit = os.path.normpath(os.fspath(path)) == os.fspath(cp)
        whole = (closed or renamed) and at_unit
        if entry is None:
            files = walk(cp)
            if files is None:
                return None
            entry = _Entry(files=files, last_change=now, next_check=now + self.settle_seconds)
            self._entries[cp] = entry
            # it appeared (renamed in, or created) and nobody wrote to it yet, or its
            # writer already closed it: it may be whole
            whole = whole or not modified
        else:
            rel = os.path.relpath(os.path.normpath(os.fspath(path)), cp)
            changed = self._update_subtree(
                cp, entry, "" if rel == "." else rel.replace(os.sep, "/")
            )
            self._touch(entry, now)
            if entry.early and not whole and (modified or changed):
                self._take_back(cp, entry)
        if closed:
            entry.closed_seen = True
        if whole and entry.files and empty_reason(entry.files) is None:
            entry.early = True
            sealed = at_unit and (closed or renamed) and list(entry.files) == [""]
            if sealed and (renamed or proof.closed_whole(cp)):
                entry.next_check = now  # proven complete: no quiet period to wait out
            self._hints.append(Hint(cp, "offer", signature_of(entry.files), sealed))
        return cp

    def scan(self, now: float, events_lost: bool = False) -> None:
        """Walk the whole root; new or changed checkpoints start their quiet period.

        Unchanged ones are left alone (a rescan is not activity), vanished ones are dropped.
        ``events_lost`` (an overflow): no early snapshot can be trusted any more.
        """
        if events_lost:
            for path, old in self._entries.items():
                self._take_back(path, old)
        present: set[Path] = set()
        for cp in find_units(self.watch_root, self.rules).units:
            files = walk(cp)
            if files is None:
                continue
            present.add(cp)
            entry = self._entries.get(cp)
            if entry is None:
                self._entries[cp] = _Entry(
                    files=files, last_change=now, next_check=now + self.settle_seconds
                )
            elif files != entry.files:
                entry.files = files
                self._touch(entry, now)
                self._take_back(cp, entry)
        for cp in [p for p in self._entries if p not in present]:
            self._take_back(cp, self._entries.pop(cp))

    def defer(self, path: Path, reason: str, now: float) -> bool:
        """A checkpoint emitted as ready could not be taken (no space, kept changing): list
        it as waiting with ``reason`` and emit it again after a backoff. False: not tracked.
        """
        entry = self._entries.get(path)
        if entry is None:
            return False
        if entry.emitted is not None:
            self._emitted.discard((path, entry.emitted))
            entry.emitted = None
        entry.reason = reason
        entry.reported = None
        self._back_off(entry, now)
        return True

    def forget(self, path: Path) -> None:
        """Stop tracking a checkpoint (the watch was removed)."""
        gone = self._entries.pop(path, None)
        if gone is not None:
            self._take_back(path, gone)

    def hints(self) -> list[Hint]:
        """Early snapshot hints since the last call, oldest first, and forget them.

        "offer": the checkpoint looks whole already (it appeared, or its writer closed
        it), so it may be snapshotted during its quiet period; "drop": it changed since, or
        went away, or settled as not valid: that snapshot is of no use.
        """
        out, self._hints = self._hints, []
        return out

    def _take_back(self, cp: Path, entry: _Entry) -> None:
        if entry.early:
            entry.early = False
            self._hints.append(Hint(cp, "drop", None))

    # -- deciding ---------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest time ``due`` has something to do, or None when nothing is pending."""
        times = [e.next_check for e in self._entries.values() if e.next_check is not None]
        return min(times, default=None)

    def due(self, now: float) -> list[Decision]:
        """Decide every checkpoint whose next look has come.

        "ready" is returned once per signature. "waiting" is returned when a checkpoint first
        fails validation or its reason/signature changes (so a callback is not spammed); the
        current list is always available from ``waiting()``.
        """
        out: list[Decision] = []
        for cp, entry in list(self._entries.items()):
            if entry.next_check is None or entry.next_check > now:
                continue
            # second look: it must agree with the first (a change without an event)
            fresh = self._look_again(cp, entry, now)
            if fresh is None:
                continue
            sig = signature_of(fresh)
            if (cp, sig) in self._emitted:
                entry.next_check = None
                entry.reason = None
                self._take_back(cp, entry)
                continue
            reason = empty_reason(fresh) or self._validate(cp)
            # third look: a change while validating (DCP's rename of ``.metadata`` can land
            # between the walk and the check) leaves a verdict that may fit neither tree
            if self._look_again(cp, entry, now) is None:
                continue
            if reason is None:
                self._emitted.add((cp, sig))
                entry.emitted = sig
                entry.early = False  # handed over: the daemon claims or drops it now
                entry.reason = None
                entry.reported = None
                entry.next_check = None
                out.append(Decision(cp, "ready", None, sig))
                continue
            entry.reason = reason
            self._take_back(cp, entry)
            self._back_off(entry, now)
            if entry.reported != (sig, reason):
                entry.reported = (sig, reason)
                out.append(Decision(cp, "waiting", reason, sig))
        return out

    def waiting(self) -> list[tuple[Path, str]]:
        """Checkpoints that settled but failed validation, with the reason."""
        return sorted((cp, e.reason) for cp, e in self._entries.items() if e.reason is not None)

    def pending(self, now: float) -> list[Pending]:
        """Checkpoints not handed over: settling (quiet time left) or waiting (since, why)."""
        out: list[Pending] = []
        for cp, e in sorted(self._entries.items()):
            if e.reason is not None and e.waiting_since is not None:
                out.append(Pending(cp, e.reason, e.waiting_since, 0.0))
            elif e.next_check is not None:
                out.append(Pending(cp, None, e.last_change, max(0.0, e.next_check - now)))
        return out

    def tracked(self) -> list[Path]:
        return sorted(self._entries)

    # -- internals --------------------------------------------------------------------------

    def _look_again(self, cp: Path, entry: _Entry, now: float) -> Files | None:
        """Walk ``cp`` now: its files when they are what ``entry`` holds; else None, and the
        checkpoint is dropped (gone) or starts another quiet period (changed)."""
        files = walk(cp)
        if files is None:
            self._take_back(cp, self._entries.pop(cp))
            return None
        if files != entry.files:
            entry.files = files
            self._touch(entry, now)
            self._take_back(cp, entry)
            return None
        return files

    def _back_off(self, entry: _Entry, now: float) -> None:
        """Check a waiting checkpoint again later: the shared policy, from the quiet period
        (at least MIN_RECHECK_SECONDS) doubling up to MAX_RECHECK_SECONDS."""
        policy = Backoff(max(MIN_RECHECK_SECONDS, self.settle_seconds), MAX_RECHECK_SECONDS)
        entry.recheck = policy.after(entry.recheck)
        entry.next_check = now + entry.recheck
        entry.waiting_since = entry.waiting_since or now

    def _touch(self, entry: _Entry, now: float) -> None:
        entry.last_change = now
        entry.next_check = now + self.settle_seconds
        entry.recheck = 0.0
        entry.waiting_since = None  # changed: a fresh quiet period, a fresh check

    def _update_subtree(self, cp: Path, entry: _Entry, rel: str) -> bool:
        """Re-stat ``rel`` (a file or a directory, possibly gone) inside checkpoint ``cp``;
        True when what it holds (names, sizes, mtimes) changed."""
        if rel == "":
            fresh = walk(cp)
            fresh = fresh if fresh is not None else {}
            changed = fresh != entry.files
            entry.files = fresh
            return changed
        prefix = rel + "/"
        old = {
            k: entry.files.pop(k)
            for k in [k for k in entry.files if k == rel or k.startswith(prefix)]
        }
        new: Files = {}
        full = cp / rel
        try:
            st = os.stat(full)
        except OSError:
            return bool(old)
        if stat.S_ISREG(st.st_mode):
            new[rel] = (st.st_size, st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode) and not os.path.islink(full):
            _walk_into(os.fspath(full), rel, new)
        entry.files.update(new)
        return new != old

    def _observe_other(self, path: Path, now: float) -> None:
        """Activity outside every unit: a sidecar or a marker matter, the rest is ignored.
        (A directory renamed in whole needs nothing here: watchdog reports every file in
        it as created, tests/integration/test_watcher_units.py.)"""
        owner = sidecar_owner(path.name)
        if owner is not None:
            entry = self._entries.get(path.with_name(owner))
            if entry is not None and entry.next_check is not None and entry.reason is None:
                # metrics written right after the checkpoint: let them land before emitting
                self._touch(entry, now)
            return
        if path.name in _POKE_NAMES:
            # DeepSpeed's marker lives outside the checkpoint dir: re-check waiting ones now
            for entry in self._entries.values():
                if entry.reason is not None:
                    entry.recheck = 0.0
                    entry.next_check = now + self.settle_seconds
