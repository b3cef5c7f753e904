"""The ownership marker ``cpv-registry.json`` at the storage root.

One storage prefix belongs to one registry: gc deletes whatever no kept version of *its*
registry references, so a prefix shared with another registry would lose that registry's
objects. The marker names the owner by the registry's root commit (the same in every clone
of it, whatever URL each machine uses), plus its remote and path for people to read.

It is written once the root commit is settled: with no remote at once, with a remote only
once that commit is on the remote branch (a first local commit may still be replaced when
another machine's push wins).
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

from cpvd.errors import CpvError
from cpvd.redact import mask_url
from cpvd.registry.metadata import now_iso
from cpvd.registry.repo import BRANCH, REMOTE, RegistryRepo
from cpvd.storage.base import MARKER_NAME, Collectable

log = logging.getLogger(__name__)


class ForeignStorage(CpvError):
    """The storage prefix belongs to another registry (or its marker is unreadable)."""

    code = "conflict"


@dataclass(frozen=True)
class RegistryIdentity:
    registry_id: str  # the root commit of the registry's branch
    remote: str | None
    path: str
    settled: bool  # whether registry_id can no longer change (see the module docstring)

    def marker(self) -> bytes:
        body = {
            "schema": 1,
            "registry_id": self.registry_id,
            "remote": self.remote,
            "path": self.path,
            "host": socket.gethostname(),
            "created_at": now_iso(),
        }
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def identity_of(repo: RegistryRepo) -> RegistryIdentity | None:
    """The registry's identity (None before its first commit). Runs git: registry thread."""
    if repo.head() is None:
        return None
    roots = sorted(repo.git("rev-list", "--max-parents=0", "HEAD").split())
    settled = True
    if repo.has_remote:
        remote_ref = f"refs/remotes/{REMOTE}/{BRANCH}"
        remote_roots = repo.git("rev-list", "--max-parents=0", remote_ref, check=False).split()
        settled = bool(roots) and roots[0] in remote_roots
    remote = mask_url(repo.cfg.remote) if repo.cfg.remote else None
    return RegistryIdentity(roots[0], remote, str(repo.path), settled)


def read_owner(storage: Collectable) -> dict[str, Any] | None:
    raw = storage.read_marker()
    if raw is None:
        return None
    try:
        owner = json.loads(raw)
    except ValueError:
        owner = None
    if not isinstance(owner, dict) or not isinstance(owner.get("registry_id"), str):
        raise ForeignStorage(
            f"the storage's {MARKER_NAME} is not a cpv ownership marker; gc deletes nothing "
            "until it names this registry (move it aside if this storage is yours alone)"
        )
    return owner


def claim(storage: Collectable, ident: RegistryIdentity | None, write: bool = True) -> bool:
    """Write the marker when there is none and ``ident`` is settled; True when written.
    Raises ForeignStorage when the storage already names another registry. ``write``
    False (a gc dry run, which changes nothing in the storage) only checks."""
    owner = read_owner(storage)
    if owner is not None:
        check_owner(owner, ident)
        return False
    if ident is None or not ident.settled or not write:
        return False
    storage.write_marker(ident.marker())
    log.info("storage marked as owned by registry %s (%s)", ident.registry_id[:12], MARKER_NAME)
    return True


def check_owner(owner: dict[str, Any], ident: RegistryIdentity | None) -> None:
    if ident is not None and owner.get("registry_id") == ident.registry_id:
        return
    who = owner.get("remote") or owner.get("path") or "?"
    raise ForeignStorage(
        f"the storage belongs to another registry: its {MARKER_NAME} names registry "
        f"{str(owner.get('registry_id'))[:12]} ({who}, host {owner.get('host', '?')}), not this "
        f"one ({ident.registry_id[:12] if ident else 'no commit yet'}); gc would delete that "
        "registry's objects, so it refuses. Give each registry its own [storage] url prefix."
    )
