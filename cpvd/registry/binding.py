"""Which storage holds a registry's objects, as the registry itself records it.

A registry's pointers are only as good as the storage their bytes sit in. The registry
commits a small record, ``.cpv/storage.json``, next to ``.dvc/config`` (whose default remote
is what ``dvc pull`` reads), and cpvd refuses to start on a config whose storage is another
one: silently rewriting ``.dvc/config`` to the new storage made every earlier version
unpullable. Moving to a new storage is ``cpvd migrate-storage``, which copies the objects
first and then switches the record in one commit.

Everything read here comes from a Git repository other machines push to: the record is
parsed defensively, and a registry made before the record existed is read from its
``.dvc/config``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from configobj import ConfigObj  # type: ignore[import-untyped]

from cpvd.registry.dvcfiles import DVC_REMOTE, render_dvc_config
from cpvd.registry.git import run_git

log = logging.getLogger(__name__)

RECORD = ".cpv/storage.json"
#: a record is a few hundred bytes; anything far larger is not one
_MAX_RECORD = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StorageIdentity:
    """What makes two storages the same place: the URL and, for S3, the endpoint."""

    url: str
    endpoint_url: str | None = None

    def describe(self) -> str:
        return f"{self.url} at {self.endpoint_url}" if self.endpoint_url else self.url


def identity_of(settings: Mapping[str, str]) -> StorageIdentity:
    """The identity of a storage from its ``.dvc/config`` remote settings."""
    endpoint = settings.get("endpointurl")
    return StorageIdentity(settings["url"].rstrip("/"), endpoint.rstrip("/") if endpoint else None)


def render_record(settings: Mapping[str, str]) -> str:
    """``.cpv/storage.json`` for the storage with these remote settings."""
    ident = identity_of(settings)
    doc: dict[str, str] = {"url": ident.url}
    if ident.endpoint_url:
        doc["endpoint_url"] = ident.endpoint_url
    doc["note"] = (
        "the storage holding this registry's objects; change it with "
        "`cpvd migrate-storage --to URL`, never by hand"
    )
    return json.dumps(doc, indent=2) + "\n"


def _head_file(path: Path, rel: str) -> str | None:
    proc = run_git(["show", f"HEAD:{rel}"], path, check=False)
    if proc.returncode != 0 or len(proc.stdout) > _MAX_RECORD:
        return None
    return proc.stdout.decode("utf-8", errors="replace")


def _clean(value: object) -> str | None:
    """A URL-ish text from the registry, or None when it is not a plausible one."""
    if not isinstance(value, str) or not value or len(value) > 2048 or _CONTROL.search(value):
        return None
    return value


def _valid_url(url: str | None) -> bool:
    return url is not None and (url.startswith("s3://") or url.startswith("/"))


def _from_record(text: str) -> StorageIdentity | None:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    url, endpoint = _clean(doc.get("url")), _clean(doc.get("endpoint_url"))
    if not _valid_url(url) or (doc.get("endpoint_url") is not None and endpoint is None):
        return None
    assert url is not None
    return identity_of({"url": url, **({"endpointurl": endpoint} if endpoint else {})})


def dvc_remote_settings_at_head(path: Path) -> dict[str, str] | None:
    """The default remote's settings in the registry's committed ``.dvc/config``."""
    text = _head_file(path, ".dvc/config")
    if text is None:
        return None
    try:
        section = ConfigObj(text.splitlines()).get(f'remote "{DVC_REMOTE}"')
    except SyntaxError:  # configobj's ConfigObjError is one
        return None
    if not isinstance(section, dict):
        return None
    settings = {k: v for k, v in section.items() if isinstance(k, str) and _clean(v)}
    return settings if _valid_url(settings.get("url")) else None


def recorded_storage(path: Path) -> StorageIdentity | None:
    """The storage the registry at ``path`` records (its record, else its ``.dvc/config``);
    None for a registry with no commit or no record of either kind."""
    if not (path / ".git").exists():
        return None
    text = _head_file(path, RECORD)
    if text is not None:
        ident = _from_record(text)
        if ident is not None:
            return ident
    settings = dvc_remote_settings_at_head(path)
    return identity_of(settings) if settings else None


def version_count(path: Path) -> int:
    """How many version tags the registry holds (each one's objects are in its storage)."""
    out = run_git(["tag", "-l", "*@v*"], path, check=False).stdout
    return len(out.split())


def storage_files(path: Path, settings: Mapping[str, str], *, switch: bool) -> dict[str, str]:
    """``.dvc/config`` and the record for the storage with ``settings``, to write into the
    registry; none when the registry records another storage and ``switch`` is not set.

    Why: a running daemon lays out the registry again after a fetch (a replay, a new
    artifact); when another machine has meanwhile migrated the registry, writing its own,
    older storage back would undo the migration for everyone.
    """
    if not switch and storage_problem(path, settings, None):
        log.error(
            "the registry %s now records another storage than this daemon's %s (migrated "
            "elsewhere?); not writing it back. Run `cpvd check` and restart on the storage "
            "the registry records",
            path,
            identity_of(settings).describe(),
        )
        return {}
    return {".dvc/config": render_dvc_config(settings), RECORD: render_record(settings)}


def storage_problem(
    path: Path, settings: Mapping[str, str], config_file: Path | None
) -> str | None:
    """Why the storage with ``settings`` cannot be used with the registry at ``path``, or
    None. A registry with no versions yet may move freely: nothing would be left behind."""
    recorded = recorded_storage(path)
    wanted = identity_of(settings)
    if recorded is None or recorded == wanted:
        return None
    n = version_count(path)
    if n == 0:
        return None
    cfg = f" --config {config_file}" if config_file else ""
    return (
        f"the registry {path} keeps the objects of its {n} version{'s' * (n != 1)} in storage "
        f"{recorded.describe()}, but [storage] url is {wanted.describe()}; cpvd will not "
        "switch storage silently (every earlier version would become unpullable). Either "
        f"copy them over and switch with `cpvd migrate-storage --to {wanted.url}{cfg}`, "
        f'or point the config back with [storage] url = "{recorded.url}"'
        + (f' and endpoint_url = "{recorded.endpoint_url}"' if recorded.endpoint_url else "")
    )

