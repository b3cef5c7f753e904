"""``cpvctl gc``: ask the daemon to delete unreferenced storage objects, show progress.

The daemon answers once gc is done; meanwhile its ``gc.progress`` events drive the bar,
read on a helper thread from an event stream opened before the request (so none is missed).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from cpvctl.client import Client
from cpvctl.errors import CpvctlError
from cpvctl.progress import Progress
from cpvctl.render import human_size

#: how long the progress thread blocks on the event stream before checking it should stop
_POLL = 0.5


class _Follower:
    """Feeds ``gc.progress`` events to a bar until :meth:`stop`."""

    def __init__(self, client: Client, bar: Progress) -> None:
        self.client, self.bar = client, bar
        self.done = threading.Event()
        self.events = self._open()
        self.thread = threading.Thread(target=self._run, name="cpvctl-gc-progress", daemon=True)
        self.thread.start()

    def _open(self) -> Any:
        try:
            return self.client.events(read_timeout=_POLL)
        except CpvctlError:
            return None  # no progress, the gc itself still runs and reports

    def _run(self) -> None:
        while not self.done.is_set() and self.events is not None:
            try:
                for event, data in self.events:
                    if self.done.is_set():
                        return
                    if event == "gc.progress" and isinstance(data.get("bytes"), int):
                        total = data.get("total")
                        self.bar.update(data["bytes"], total if isinstance(total, int) else None)
            except TimeoutError:
                self.events = None if self.done.is_set() else self._open()
            except CpvctlError:
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5 * _POLL)


def run_gc(client: Client, dry_run: bool) -> dict[str, Any]:
    bar = Progress("gc (dry run)" if dry_run else "gc")
    follower = _Follower(client, bar)
    try:
        return client.gc(dry_run=dry_run)
    finally:
        follower.stop()
        bar.finish()


def render_gc(result: Mapping[str, Any]) -> str:
    dry = bool(result.get("dry_run"))
    n = result.get("objects_to_delete", 0)
    size = human_size(result.get("bytes_to_delete", 0))
    head = f"would delete {n} objects ({size})" if dry else f"deleted {n} objects ({size})"
    return "\n".join(
        [
            head,
            f"  versions: {result.get('versions_kept', 0)} kept, "
            f"{result.get('versions_pruned', 0)} pruned",
            f"  objects listed: {result.get('objects_listed', 0)}, referenced by kept versions: "
            f"{result.get('objects_referenced', 0)}, younger than the grace period "
            f"({result.get('grace_hours', 0):g} h, kept): {result.get('objects_young', 0)}",
        ]
    )
