"""Events other parts publish on the bus that hooks act on: a promote (``promoted`` on the
bus, ``stage.moved`` for hooks), pruning (``version.pruned``) and stalled uploads
(``upload.stalled``). The tap runs on the publishing thread, inside the publisher's state
transaction when it has one open (:meth:`cpvd.state.db.StateDB.write` joins it), so an
event published there is recorded atomically with its change.

``version.created`` and ``job.failed`` are not taken from the bus: the worker records them
in the transaction that ends the job (a bus event is published after the commit, and a kill
between the two would lose it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cpvd.errors import CpvError
from cpvd.hooks.outbox import Outbox

log = logging.getLogger(__name__)

#: bus event type -> hook event type
BUS_TO_HOOK = {
    "promoted": "stage.moved",
    "stage.moved": "stage.moved",
    "version.pruned": "version.pruned",
    "upload.stalled": "upload.stalled",
}


def bus_tap(outbox: Outbox) -> Callable[[str, dict[str, Any]], None]:
    def tap(type: str, data: dict[str, Any]) -> None:
        hook_type = BUS_TO_HOOK.get(type)
        if hook_type is None:
            return
        try:
            outbox.record(hook_type, dict(data))
        except CpvError as exc:  # the state database is unwritable: say so, never break publish
            log.error("hooks: could not record %s: %s", hook_type, exc.message)

    return tap
