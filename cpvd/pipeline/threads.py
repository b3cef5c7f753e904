"""The daemon's thread pools, and how the event loop hands work to them.

DVC and Git work on one registry is serialised, so the registry has one thread of its own;
storage reads and uploads run on the io pool; snapshots (copy + hash) on their own thread so
a long copy never blocks a query; early per-file uploads on one more (cpvd.pipeline.file_upload).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from cpvd.pipeline.priority import lower_thread_priority

T = TypeVar("T")


def _pool(n: int, name: str, nice: int = 0) -> Callable[[], ThreadPoolExecutor]:
    start = partial(lower_thread_priority, nice)
    return lambda: ThreadPoolExecutor(n, thread_name_prefix=name, initializer=start)


@dataclass
class Executors:
    """The four pools; ``on_*`` runs a call on one of them from the event loop."""

    registry: ThreadPoolExecutor = field(default_factory=_pool(1, "cpv-registry"))
    io: ThreadPoolExecutor = field(default_factory=_pool(2, "cpv-io"))
    snapshot: ThreadPoolExecutor = field(default_factory=_pool(1, "cpv-snapshot"))
    #: stores files hashed while their snapshot is still being taken (cpvd.pipeline.file_upload)
    file_upload: ThreadPoolExecutor = field(default_factory=_pool(1, "cpv-file-upload"))

    @classmethod
    def lowered(cls, nice: int) -> Executors:
        """The same pools, each thread at least ``nice`` (``[daemon] nice``; see
        cpvd.pipeline.priority): they do the hashing, copying, uploading and Git work."""
        return cls(
            registry=_pool(1, "cpv-registry", nice)(),
            io=_pool(2, "cpv-io", nice)(),
            snapshot=_pool(1, "cpv-snapshot", nice)(),
            file_upload=_pool(1, "cpv-file-upload", nice)(),
        )

    async def on_registry(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.registry, fn, *args)

    async def on_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    async def on_snapshot(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.snapshot, fn, *args)

    def shutdown(self) -> None:
        for ex in (self.snapshot, self.file_upload, self.io, self.registry):
            ex.shutdown(wait=True, cancel_futures=True)
