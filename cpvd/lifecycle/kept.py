"""Which versions a registry keeps, read from its tag names alone.

A version is *pruned* when the registry holds a GTO deregistration tag for it,
``NAME@vX.Y.Z!#N`` (N a counter; ``gto deprecate NAME vX.Y.Z`` writes one), whoever made
it; every other version is *kept*. Pure functions over the tag index: no git, no storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cpvd.registry.index import RegistryIndex
from cpvd.registry.metadata import VersionInfo

_DEREGISTER_RE = re.compile(r"^(?P<artifact>.+)@(?P<version>v\d+\.\d+\.\d+)!#(?P<n>\d+)$")
_VERSION_RE = re.compile(r"^(?P<artifact>.+)@(?P<version>v\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class Kept:
    """The kept versions with readable metadata, the count of pruned ones, and the kept
    version tags whose message cpvd could not read (their pointer must be read instead)."""

    versions: list[VersionInfo]
    pruned: int
    unreadable: list[str]  # version tag names


def pruned_versions(tag_names: Iterable[str]) -> set[tuple[str, str]]:
    """``(artifact, version)`` of every deregistration tag among ``tag_names``."""
    out = set()
    for name in tag_names:
        m = _DEREGISTER_RE.match(name)
        if m:
            out.add((m["artifact"], m["version"]))
    return out


def kept_versions(index: RegistryIndex) -> Kept:
    pruned = pruned_versions(index.tags)
    readable = {v.tag for vs in index.versions.values() for v in vs}
    versions = [
        v for vs in index.versions.values() for v in vs if (v.artifact, v.version) not in pruned
    ]
    unreadable = []
    for name in index.tags:
        m = _VERSION_RE.match(name)
        if m and name not in readable and (m["artifact"], m["version"]) not in pruned:
            unreadable.append(name)
    counted = sum(1 for vs in index.versions.values() for v in vs) - len(versions)
    return Kept(versions, counted, sorted(unreadable))
