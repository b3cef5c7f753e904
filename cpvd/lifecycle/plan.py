"""What a gc deletes, as a pure decision over the storage listing.

An object is deleted only when both hold: no kept version references it (the caller passes
every referenced md5: file objects, ``.dir`` manifests and the entries of those manifests),
and its storage mtime is at least ``grace`` seconds old. The second rule covers what the
registry read cannot see: a version another machine pushed after this gc read the registry,
or a job of this daemon still between its upload and its tag, references objects stored
moments ago.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cpvd.storage.base import StoredObject


@dataclass
class GcPlan:
    delete: list[StoredObject] = field(default_factory=list)
    listed: int = 0
    referenced: int = 0  # listed objects some kept version references
    young: int = 0  # unreferenced, but inside the grace period

    @property
    def delete_bytes(self) -> int:
        return sum(o.size for o in self.delete)

    def ordered(self) -> list[StoredObject]:
        """File objects before ``.dir`` manifests: a gc killed half-way leaves no manifest
        whose listed files are already gone while it still is there."""
        return sorted(self.delete, key=lambda o: (o.md5.endswith(".dir"), o.md5))


def plan_gc(
    stored: Iterable[StoredObject], referenced: set[str], now: float, grace: float
) -> GcPlan:
    plan = GcPlan()
    cutoff = now - grace
    for obj in stored:
        plan.listed += 1
        if obj.md5 in referenced:
            plan.referenced += 1
        elif obj.mtime > cutoff:
            plan.young += 1
        else:
            plan.delete.append(obj)
    return plan
