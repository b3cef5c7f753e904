"""Routing API calls to the registry an artifact belongs to (several ``[[registry]]``).

Artifact names are unique per daemon, so ``versions``, ``show``, ``pull``, ``revert``,
``promote``, ``verify NAME`` need no new syntax: the router finds the artifact's registry
(cpvd.config.views.registry_of) and calls that registry's :class:`Queries` or
:class:`Operations`. Calls that name no artifact ask every registry and join the answers.
The routers are subclasses so the handlers keep their one type; with a single registry the
daemon hands the handlers the plain objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from cpvd.api.operations import Operations
from cpvd.api.queries import Queries
from cpvd.api.version_pages import PageRequest
from cpvd.config.model import Config
from cpvd.config.views import registry_of
from cpvd.errors import NotFound
from cpvd.lifecycle.collector import Collector


class QueryRouter(Queries):
    """:class:`Queries` of the artifact's registry; ``artifacts`` and objects from all."""

    def __init__(self, config: Callable[[], Config], lanes: Mapping[str, Queries]) -> None:
        first = next(iter(lanes.values()))
        super().__init__(config, first.engine, first.queue, first.executors)
        self.lanes = dict(lanes)

    def of(self, artifact: str) -> Queries:
        return self.lanes[registry_of(self.config(), artifact)]

    async def versions_page(self, artifact: str, req: PageRequest) -> tuple[bytes, int]:
        return await self.of(artifact).versions_page(artifact, req)

    async def versions_json(self, artifact: str, every: bool = False) -> bytes:
        return await self.of(artifact).versions_json(artifact, every)

    async def show(self, artifact: str, version: str | None) -> dict[str, Any]:
        return await self.of(artifact).show(artifact, version)

    async def manifest(
        self, artifact: str, version: str | None, include_pruned: bool = False, check: bool = True
    ) -> dict[str, Any]:
        return await self.of(artifact).manifest(artifact, version, include_pruned, check)

    async def artifacts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, lane in self.lanes.items():
            out += [{**a, "registry": name} for a in await lane.artifacts()]
        return out

    async def open_object(self, md5: str) -> BinaryIO:
        """A pull asks by md5 alone: the first registry's storage that holds it answers."""
        missing: NotFound | None = None
        for lane in self.lanes.values():
            try:
                return await lane.open_object(md5)
            except NotFound as exc:
                missing = exc
        assert missing is not None
        raise missing


class OperationsRouter(Operations):
    """:class:`Operations` of the artifact's registry; ``verify`` of all when unnamed."""

    def __init__(self, config: Callable[[], Config], lanes: Mapping[str, Operations]) -> None:
        first = next(iter(lanes.values()))
        super().__init__(
            first.engine, first.queue, first.ledger, first.executors, first.health,
            first.paused, first.wakeups, first.bus,
        )  # fmt: skip
        self.config = config
        self.lanes = dict(lanes)

    def of(self, artifact: str) -> Operations:
        return self.lanes[registry_of(self.config(), artifact)]

    async def revert(
        self,
        artifact: str,
        version: str,
        with_data: bool,
        to: str | None,
        include_pruned: bool = False,
    ) -> dict[str, Any]:
        return await self.of(artifact).revert(artifact, version, with_data, to, include_pruned)

    async def promote(
        self, artifact: str, version: str | None, stage: str, with_data: bool
    ) -> dict[str, Any]:
        return await self.of(artifact).promote(artifact, version, stage, with_data)

    async def verify(self, sample: int | None, artifact: str | None) -> dict[str, Any]:
        if artifact is not None:
            return await self.of(artifact).verify(sample, artifact)
        joined: dict[str, Any] = {"checked": 0, "versions": 0, "missing": [], "corrupt": []}
        for lane in self.lanes.values():
            part = await lane.verify(sample, None)
            for key in joined:
                joined[key] += part[key]
        return joined


class CollectorRouter(Collector):
    """``cpvctl gc`` collects every registry's storage; the answer sums their counts and
    keeps each registry's own under ``registries``."""

    def __init__(self, lanes: Mapping[str, Collector]) -> None:
        first = next(iter(lanes.values()))
        super().__init__(first.engine, first.executors, first.bus, first.config)
        self.lanes = dict(lanes)

    def cancel(self) -> None:
        for lane in self.lanes.values():
            lane.cancel()

    async def run(self, dry_run: bool) -> dict[str, Any]:
        parts = {name: await lane.run(dry_run) for name, lane in self.lanes.items()}
        joined: dict[str, Any] = {}
        for part in parts.values():
            for key, value in part.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    joined[key] = joined.get(key, 0) + value
                else:
                    joined.setdefault(key, value)
        joined["registries"] = parts
        return joined
