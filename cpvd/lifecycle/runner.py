"""When best and retention run, and what they tell the rest of the daemon.

- right after a version is tagged (same registry-thread call): move ``best``, so its stage
  tag leaves in the version's own atomic push; with no remote, retention too (there is no
  push to wait for);
- after every successful push (and at start-up): catch ``best`` up (a rejected push replays
  versions and drops their unpushed stage tags) and apply retention, then push the new tags
  in one atomic push. A kill in between leaves local tags that the next push carries
  (``--follow-tags``), so a restart finishes the pruning.

Publishes ``stage.moved`` and ``version.pruned``; keeps the per-artifact summary that
``cpvctl status`` shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cpvd.api.events import EventBus
from cpvd.config.model import Config
from cpvd.errors import CpvError
from cpvd.lifecycle import retention
from cpvd.lifecycle.best import move_best
from cpvd.lifecycle.summary import summarize
from cpvd.registry.core import EngineCore
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.model import VersionResult
from cpvd.registry.repo import PushRejected
from cpvd.registry.sync import fetch_all_tags

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    moved: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[dict[str, str]] = field(default_factory=list)

    def tags(self) -> list[str]:
        return [m["tag"] for m in self.moved] + [p["tag"] for p in self.pruned]


@dataclass(eq=False)
class Lifecycle:
    """Registry-thread methods only (the engine is not thread-safe)."""

    config: Callable[[], Config]
    core: EngineCore
    bus: EventBus
    #: per artifact: latest, best, kept, pruned, without_metric (read by ``status``)
    summary: list[dict[str, Any]] = field(default_factory=list)

    def after_version(self, make: Callable[[], VersionResult]) -> VersionResult:
        """Run ``make`` (the engine's ``version``); then best (and, locally, retention)."""
        result = make()
        if result.status != "versioned":
            return result
        self._warn_without_metric(result.info)
        if self.core.registry.has_remote:
            outcome = Outcome(moved=self._move_best([result.info.artifact]))
        else:
            outcome = self._apply()
        self._publish(outcome)
        return result

    def after_push(self) -> Outcome:
        """Catch best up and prune, then push the new tags together (remote only)."""
        outcome = self._apply()
        if outcome.tags() and self.core.registry.has_remote:
            outcome = self._push(outcome)
        self._publish(outcome)
        return outcome

    def _apply(self) -> Outcome:
        moved = self._move_best(w.artifact for w in self.config().watches)
        plans = retention.plan(self.core, self.config())
        pruned = retention.deregister(self.core, plans) if plans else []
        return Outcome(moved, pruned)

    def _move_best(self, artifacts: Any) -> list[dict[str, Any]]:
        moved = []
        for artifact in artifacts:
            w = self.config().watch_for(artifact)
            if w is not None and w.best is not None:
                m = move_best(self.core, artifact, w.best)
                if m is not None:
                    moved.append(m)
        return moved

    def _push(self, outcome: Outcome) -> Outcome:
        """One atomic push of the new tags; on any failure none of them stays (the next
        pass decides again on what the remote has)."""
        reg = self.core.registry
        try:
            reg.push([f"refs/tags/{t}" for t in outcome.tags()])
            return outcome
        except PushRejected:
            reg.delete_tags(outcome.tags())
            fetch_all_tags(self.core)
            log.info("lifecycle tags collided with another machine's; deciding again later")
            return Outcome()
        except CpvError:
            reg.delete_tags(outcome.tags())
            self.core.invalidate()
            raise

    def _publish(self, outcome: Outcome) -> None:
        for m in outcome.moved:
            self.bus.publish("stage.moved", **m)
        for p in outcome.pruned:
            log.info("pruned %s@%s (%s)", p["artifact"], p["version"], p["tag"])
            self.bus.publish("version.pruned", **p)
        self.refresh()

    def start(self) -> None:
        """At start-up: drop deregistration tags a kill left unpushed, then the summary.

        Why: the next push would carry them (``--follow-tags``), and were one's name taken on
        the remote meanwhile (another machine pruned the same version with the same counter),
        every push would be rejected and no replay could help (it re-makes only unpushed
        commits). The first pass after the first push makes them again if still due.
        """
        if self.core.registry.has_remote:
            try:
                self._drop_unpushed()
            except CpvError as exc:  # remote unreachable: the push fails first anyway
                log.warning("cannot compare deregistrations with the remote: %s", exc.message)
        self.refresh()

    def _drop_unpushed(self) -> None:
        remote = self.core.registry.remote_tags()
        index = self.core.index()
        names = [f"{d.artifact}@{d.version}!#{d.counter}" for d in index.deregistrations]
        stale = [n for n in names if n in index.tags and n not in remote]
        if stale:
            log.info("dropping %d unpushed deregistration tags; deciding again", len(stale))
            self.core.registry.delete_tags(stale)
            self.core.invalidate()

    def refresh(self) -> None:
        self.summary = summarize(self.core, self.config())

    def _warn_without_metric(self, info: VersionInfo) -> None:
        w = self.config().watch_for(info.artifact)
        if w is not None and w.best is not None and w.best.metric not in info.metrics:
            log.warning(
                "%s has no metric %r: it can never become best (see cpvctl status)",
                info.tag,
                w.best.metric,
            )
