"""Watch checkpoint directories and report each complete checkpoint once.

Threads: watchdog's observer threads only *append* raw events to a bounded queue; one timer
thread owned by the Watcher drains it, feeds the per-root ``completeness.Tracker`` and calls
the callbacks. So all tracker state is touched under one lock, a slow callback never blocks
inotify reading, and the timer sleeps until the next due time (idle CPU is ~0).

Events are not trusted to be complete (a rename-in arrives as ``created`` only, inotify
overflows silently, files arrive while the daemon is down, network filesystems send none),
hence a full rescan at start and every ``rescan_seconds``. A root that does not exist yet is
retried at each rescan; inotify's watch limit (ENOSPC) falls back to polling for that root.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from cpvd.config.model import WatchConfig
from cpvd.watch.pending import Pending
from cpvd.watch.settle import Decision, Hint, Signature, Tracker
from cpvd.watch.unit_scan import UnitScan, find_units
from cpvd.watch.units import UnitRules, is_ignored_name

log = logging.getLogger(__name__)

OnReady = Callable[[WatchConfig, Path, Signature], None]
OnWaiting = Callable[[WatchConfig, Path, str], None]
OnHint = Callable[[WatchConfig, Hint], None]
#: ``(root, its unit rules, path, event kinds)``: raw activity, for cpvd.pipeline.follow
OnActivity = Callable[[Path, UnitRules, Path, set[str]], None]

#: only events that can change a checkpoint (no opened/closed_no_write/dir-modified: the
#: daemon's own reads of a snapshot source must not look like activity)
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
#: raw events held between ticks; beyond this they are dropped and a rescan is forced instead
MAX_PENDING_EVENTS = 100_000


def _norm(path: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


@dataclass
class _Watch:
    config: WatchConfig
    root: Path
    tracker: Tracker
    handle: ObservedWatch | None = None
    observer: BaseObserver | None = None
    root_id: tuple[int, int] | None = None
    #: inotify refused (watch limit): poll this root from now on
    polling_fallback: bool = False
    missing_logged: bool = False


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's thread: queue the raw event and return at once."""

    def __init__(self, watcher: Watcher, key: Path) -> None:
        self._watcher = watcher
        self._key = key

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        self._watcher._enqueue(self._key, [src], event.event_type)
        if event.event_type == "moved" and event.dest_path:
            # a temporary name renamed to its final one: the writer's commit (settle.proof)
            kind = "renamed" if is_ignored_name(os.path.basename(src)) else "moved"
            self._watcher._enqueue(self._key, [os.fsdecode(event.dest_path)], kind)


def _ignore_ready(watch: WatchConfig, path: Path, signature: Signature) -> None:
    """Before :meth:`Watcher.start` nothing is decided, so nothing arrives here."""


class Watcher:
    """Detect complete checkpoints under every watch root; see the module docstring."""

    def __init__(
        self,
        watches: Sequence[WatchConfig],
        rescan_seconds: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        #: where decisions go; given to :meth:`start` (the intake exists by then)
        self._on_ready: OnReady = _ignore_ready
        self._on_waiting: OnWaiting | None = None
        #: early snapshot offers and drops (cpvd.pipeline.speculative_snapshot), before any
        #: decision
        self._on_hint: OnHint | None = None
        #: every event's path and kinds, before any decision (cpvd.pipeline.follow)
        self.on_activity: OnActivity | None = None
        self.rescan_seconds = max(0.1, float(rescan_seconds))
        self._poll_interval = poll_interval
        #: guards trackers and scheduling; taken before ``_cond`` when both are needed
        self._state = threading.RLock()
        #: guards the raw event queue and the timer's wake-up flags
        self._cond = threading.Condition(threading.Lock())
        self._events: deque[tuple[Path, str, str]] = deque()  # (root, path, event type)
        self._kick = False
        self._rescan_requested = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._inotify: BaseObserver | None = None
        self._poller: BaseObserver | None = None
        self._next_rescan = 0.0
        self._watches: dict[Path, _Watch] = {}
        for w in watches:
            self._add(w)

    # -- lifecycle --------------------------------------------------------------------------

    def start(
        self,
        on_ready: OnReady,
        on_waiting: OnWaiting | None = None,
        on_hint: OnHint | None = None,
    ) -> None:
        """Schedule every root, scan them (files present before start), start the timer.
        Complete checkpoints go to ``on_ready``, invalid ones to ``on_waiting``, early
        snapshot offers and drops to ``on_hint``; all three are called on the watcher's
        thread."""
        if self._thread is not None:
            return
        self._on_ready, self._on_waiting, self._on_hint = on_ready, on_waiting, on_hint
        self._stopping = False
        self._inotify = Observer()
        self._poller = PollingObserver(timeout=self._poll_interval)
        self._inotify.start()
        self._poller.start()
        self.rescan()
        self._thread = threading.Thread(target=self._run, name="cpvd-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer and every observer thread, and join them all."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._state:
            for w in self._watches.values():
                w.handle = w.observer = w.root_id = None
            for obs in (self._inotify, self._poller):
                if obs is not None:
                    obs.stop()
                    obs.join()
            self._inotify = self._poller = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- public operations ------------------------------------------------------------------

    def rescan(self) -> None:
        """Walk every root now (and retry scheduling missing roots); feeds the trackers.

        Safe from any thread; emissions still happen on the watcher's own thread.
        """
        with self._state:
            now = time.monotonic()
            for w in self._watches.values():
                self._ensure_scheduled(w)
                w.tracker.scan(now)
            self._next_rescan = now + self.rescan_seconds
        self._wake()

    def update_watches(self, watches: Sequence[WatchConfig]) -> None:
        """Apply a reloaded config: add/remove roots, keep the tracked state of kept ones."""
        wanted = {_norm(w.path): w for w in watches}
        with self._state:
            for key in [k for k in self._watches if k not in wanted]:
                w = self._watches.pop(key)
                self._unschedule(w)
                log.info("stopped watching %s", key)
            now = time.monotonic()
            for key, cfg in wanted.items():
                existing = self._watches.get(key)
                if existing is None:
                    w = self._add(cfg)
                    log.info("watching %s for %s", key, cfg.artifact)
                else:
                    w = existing
                    poll_changed = w.config.poll != cfg.poll
                    w.config = cfg
                    w.tracker.settle_seconds = max(0.0, float(cfg.settle_seconds))
                    w.tracker.rules = UnitRules.for_watch(cfg)
                    if poll_changed:
                        self._unschedule(w)
                if self.running:
                    self._ensure_scheduled(w)
                    w.tracker.scan(now)
        self._wake()

    def defer(self, watch: WatchConfig, path: Path, reason: str) -> None:
        """Report ``path`` again later: the daemon could not take it now (see Tracker.defer)."""
        with self._state:
            w = self._watches.get(_norm(watch.path))
            if w is None or not w.tracker.defer(_norm(path), reason, time.monotonic()):
                return
        self._wake()

    def waiting(self) -> list[tuple[WatchConfig, Path, str]]:
        """Checkpoints that settled but are not valid yet, with the reason (for status)."""
        with self._state:
            return [
                (w.config, path, reason)
                for w in self._watches.values()
                for path, reason in w.tracker.waiting()
            ]

    def ignored(self) -> list[tuple[WatchConfig, UnitScan]]:
        """What each watch holds that is in no unit, with the reason (walks every root:
        call it off the event loop)."""
        with self._state:
            roots = [(w.config, w.root, w.tracker.rules) for w in self._watches.values()]
        return [(cfg, find_units(root, rules, ignored=True)) for cfg, root, rules in roots]

    def pending(self) -> list[tuple[WatchConfig, Pending]]:
        """Checkpoints settling or waiting, per watch (for status)."""
        now = time.monotonic()
        with self._state:
            return [(w.config, p) for w in self._watches.values() for p in w.tracker.pending(now)]

    def watches(self) -> list[WatchConfig]:
        with self._state:
            return [w.config for w in self._watches.values()]

    # -- internals --------------------------------------------------------------------------

    def _add(self, cfg: WatchConfig) -> _Watch:
        key = _norm(cfg.path)
        tracker = Tracker(key, cfg.settle_seconds, rules=UnitRules.for_watch(cfg))
        w = _Watch(config=cfg, root=key, tracker=tracker)
        self._watches[key] = w
        return w

    def _enqueue(self, key: Path, paths: list[str], kind: str) -> None:
        with self._cond:
            if len(self._events) >= MAX_PENDING_EVENTS:
                self._rescan_requested = True  # like an inotify overflow: recover by walking
            else:
                for p in paths:
                    self._events.append((key, p, kind))
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._kick = True
            self._cond.notify_all()

    def _ensure_scheduled(self, w: _Watch) -> None:
        """Schedule ``w`` if its root exists and is not watched (or was replaced)."""
        if self._inotify is None or self._poller is None:
            return
        try:
            st = os.stat(w.root)
        except OSError as exc:
            if w.handle is not None:
                self._unschedule(w)
            level = logging.DEBUG if w.missing_logged else logging.WARNING
            log.log(
                level,
                "watch root %s unavailable (%s); retrying at each rescan",
                w.root,
                exc.strerror,
            )
            w.missing_logged = True
            return
        root_id = (st.st_dev, st.st_ino)
        if w.handle is not None and w.root_id == root_id and self._emitter_alive(w):
            return
        if w.handle is not None:
            log.info("watch root %s was replaced; watching the new one", w.root)
            self._unschedule(w)
        use_poll = w.config.poll or w.polling_fallback
        observer = self._poller if use_poll else self._inotify
        handler = _Handler(self, w.root)
        try:
            w.handle = observer.schedule(
                handler, os.fspath(w.root), recursive=True, event_filter=EVENT_FILTER
            )
        except OSError as exc:
            if use_poll or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                log.error("cannot watch %s: %s; relying on rescans", w.root, exc)
                return
            log.warning(
                "inotify limit reached for %s (%s); polling it instead. Raise "
                "fs.inotify.max_user_watches / max_user_instances to restore events.",
                w.root,
                exc,
            )
            w.polling_fallback = True
            observer = self._poller
            w.handle = observer.schedule(
                handler, os.fspath(w.root), recursive=True, event_filter=EVENT_FILTER
            )
        w.observer = observer
        w.root_id = root_id
        if w.missing_logged:
            log.info("watch root %s is available now", w.root)
        w.missing_logged = False

    @staticmethod
    def _emitter_alive(w: _Watch) -> bool:
        """False when watchdog stopped the emitter (it does when the root is deleted); the
        inode check alone misses that, because ext4 reuses a freed inode number at once."""
        if w.observer is None:
            return False
        return any(e.watch == w.handle and e.is_alive() for e in list(w.observer.emitters))

    def _unschedule(self, w: _Watch) -> None:
        if w.handle is not None and w.observer is not None:
            # KeyError: the observer already dropped it (its emitter died with the root)
            with contextlib.suppress(KeyError):
                w.observer.unschedule(w.handle)
        w.handle = w.observer = w.root_id = None

    def _next_deadline(self) -> float:
        with self._state:
            times = [self._next_rescan]
            for w in self._watches.values():
                t = w.tracker.next_due()
                if t is not None:
                    times.append(t)
            return min(times)

    def _run(self) -> None:
        while True:
            deadline = self._next_deadline()
            with self._cond:
                while not (self._stopping or self._events or self._kick or self._rescan_requested):
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                batch = list(self._events)
                self._events.clear()
                self._kick = False
                forced = self._rescan_requested
                self._rescan_requested = False
            try:
                self._tick(batch, forced)
            except Exception:  # the thread must survive any one bad tick
                log.exception("watcher tick failed; continuing")

    def _tick(self, batch: list[tuple[Path, str, str]], forced_rescan: bool) -> None:
        decisions: list[tuple[WatchConfig, Decision]] = []
        hints: list[tuple[WatchConfig, Hint]] = []
        with self._state:
            now = time.monotonic()
            merged: dict[tuple[Path, str], set[str]] = {}
            for key, path, kind in batch:
                merged.setdefault((key, path), set()).add(kind)
            for (key, path), kinds in merged.items():
                w = self._watches.get(key)
                if w is None:
                    continue
                if os.path.normpath(path) == os.fspath(w.root):
                    self._ensure_scheduled(w)  # the root itself went away (or came back)
                    w.tracker.scan(now)
                else:
                    if self.on_activity is not None:
                        self.on_activity(w.root, w.tracker.rules, Path(path), kinds)
                    w.tracker.observe(
                        Path(path),
                        now,
                        closed="closed" in kinds,
                        modified="modified" in kinds,
                        renamed="renamed" in kinds,
                    )
            if forced_rescan or now >= self._next_rescan:
                if forced_rescan:
                    log.warning("event queue overflowed; rescanning every watch root")
                for w in self._watches.values():
                    self._ensure_scheduled(w)
                    w.tracker.scan(now, events_lost=forced_rescan)
                self._next_rescan = now + self.rescan_seconds
            for w in self._watches.values():
                decisions.extend((w.config, d) for d in w.tracker.due(now))
                hints.extend((w.config, h) for h in w.tracker.hints())
        if self._on_hint is not None:
            for cfg, h in hints:
                try:
                    self._on_hint(cfg, h)
                except Exception:
                    log.exception("watcher hint callback failed for %s", h.path)
        for cfg, d in decisions:
            self._emit(cfg, d)

    def _emit(self, cfg: WatchConfig, d: Decision) -> None:
        try:
            if d.status == "ready":
                # debug: after a restart every file already versioned settles again; the
                # intake logs "checkpoint complete" only for the ones it takes
                log.debug(
                    "settled: %s (%d bytes, %d files)", d.path, d.signature.size, d.signature.files
                )
                self._on_ready(cfg, d.path, d.signature)
            else:
                log.info("checkpoint waiting: %s: %s", d.path, d.reason)
                if self._on_waiting is not None:
                    self._on_waiting(cfg, d.path, d.reason or "invalid")
        except Exception:
            log.exception("watcher callback failed for %s", d.path)
