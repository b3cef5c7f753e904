"""Which versions a registry keeps, read from its index alone.

A version is *pruned* when the registry holds a GTO deregistration tag for it,
``NAME@vX.Y.Z!#N`` on the version's own commit (``gto deprecate NAME vX.Y.Z`` writes one);
the index reads those tags as untrusted input and sets ``VersionInfo.pruned``
(cpvd.registry.index). Every other version is *kept*. gc relies on this one definition:
a deregistration tag the index refuses (a forged one on another commit) prunes nothing,
so it can never make gc delete a version's objects. Pure functions: no git, no storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cpvd.registry.index import RegistryIndex
from cpvd.registry.metadata import VersionInfo

_VERSION_RE = re.compile(r"^(?P<artifact>.+)@(?P<version>v\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class Kept:
    """The kept versions with readable metadata, the count of pruned ones, and the version
    tags whose message cpvd could not read (always kept: their pointer is read instead)."""

    versions: list[VersionInfo]
    pruned: int
    unreadable: list[str]  # version tag names


def kept_versions(index: RegistryIndex) -> Kept:
    every = [v for vs in index.versions.values() for v in vs]
    readable = {v.tag for v in every}
    unreadable = sorted(n for n in index.tags if _VERSION_RE.match(n) and n not in readable)
    versions = [v for v in every if not v.pruned]
    return Kept(versions, len(every) - len(versions), unreadable)
