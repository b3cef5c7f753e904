"""Abort the interrupted multipart uploads nobody resumed.

Start-up keeps an interrupted upload for the next upload of its object to resume
(cpvd.storage.multipart). When that never comes (the checkpoint changed before its job
re-took a snapshot, the job was skipped), its parts would stay billed. So, while the queue
is empty, uploads left untouched for a whole sweep period are aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cpvd.errors import CpvError
from cpvd.pipeline.threads import Executors
from cpvd.state.queue import JobQueue
from cpvd.storage.base import Storage

log = logging.getLogger(__name__)

#: seconds between two sweeps; also how long an upload must be untouched to be aborted
SWEEP_EVERY = 900.0


async def sweep_unresumed(
    storage: Callable[[], Storage], queue: JobQueue, ex: Executors, every: float = SWEEP_EVERY
) -> None:
    while True:
        await asyncio.sleep(every)
        abort = getattr(storage(), "abort_unresumed", None)  # S3 only: local has no uploads
        if abort is None or queue.depth() > 0:
            continue
        with contextlib.suppress(CpvError):
            aborted = await ex.on_io(abort, every)
            if aborted:
                log.info("aborted %d interrupted uploads that nothing resumed", aborted)
