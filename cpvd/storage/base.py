"""What every storage backend offers, and DVC 3's remote layout.

A backend writes objects exactly where ``dvc push`` would, so a clone of the registry can
``dvc pull`` them with no CPV installed: ``<root>/files/md5/<2 hex>/<30 hex>`` for files and
``<root>/files/md5/<2 hex>/<30 hex>.dir`` for directory manifests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from cpvd.errors import InputError, IntegrityError

Progress = Callable[[int], None]

#: temp/abandoned uploads younger than this are assumed to be in flight (maybe on another
#: machine sharing the remote) and are left alone by ``abort_incomplete_uploads``
DEFAULT_ABANDON_AGE = 24 * 3600.0

_MD5_RE = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
#: the file at the storage root naming the registry that owns the prefix (cpvd.lifecycle.marker)
MARKER_NAME = "cpv-registry.json"


def check_md5(md5: str) -> str:
    """Return ``md5`` when it is ``<32 hex>`` or ``<32 hex>.dir``; anything else could
    escape the layout (``../``), so it is refused."""
    if not isinstance(md5, str) or not _MD5_RE.match(md5):
        raise InputError(f"not a DVC md5: {md5!r}", code="bad_request")
    return md5


def object_key(md5: str) -> str:
    """The object's path relative to the remote root, as DVC 3 lays it out."""
    check_md5(md5)
    return f"files/md5/{md5[:2]}/{md5[2:]}"


@runtime_checkable
class Storage(Protocol):
    """A DVC remote the daemon uploads checkpoint content into.

    Every method may raise ``cpvd.errors.StorageError`` (retryable: unreachable, throttled,
    5xx) with a message that says what is wrong (missing bucket, access denied, ...).
    Implementations are safe to call from several threads.
    """

    def describe(self) -> str:
        """Human-readable location, e.g. ``s3://bucket/prefix`` or a local path."""
        ...

    def check(self) -> None:
        """Fail fast (StorageError) when the remote cannot be used; creates a local root."""
        ...

    def has(self, md5: str) -> bool: ...

    def size_of(self, md5: str) -> int | None:
        """The stored object's size, or None when absent."""
        ...

    def put_file(self, md5: str, src: Path, size: int, progress: Progress | None = None) -> None:
        """Store ``src`` (whose md5 the caller computed) atomically; a no-op when an object
        of that size is already there. ``progress`` gets byte increments, possibly from
        several threads at once."""
        ...

    def put_bytes(self, md5: str, data: bytes) -> None:
        """Store a small object (a ``.dir`` manifest); checks ``data`` matches ``md5``."""
        ...

    def open_object(self, md5: str) -> BinaryIO:
        """A sequential read stream of the object; NotFound(code="not_found") if absent."""
        ...

    def verify(self, md5: str) -> bool:
        """Re-read the stored object and check its md5; False when corrupt or absent."""
        ...

    def abort_incomplete_uploads(self, older_than: float = DEFAULT_ABANDON_AGE) -> int:
        """Remove uploads abandoned by a crash (started more than ``older_than`` seconds
        ago); returns how many."""
        ...

    def dvc_remote_settings(self) -> dict[str, str]:
        """Keys for the registry's ``.dvc/config`` remote section (``url`` and optional
        ``endpointurl``/``region``/``profile``); never secrets."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """One object found by :meth:`Collectable.list_objects`: its md5 (``.dir`` kept), its
    size and its age reference, the storage's modification time (seconds since the epoch)."""

    md5: str
    size: int
    mtime: float


def md5_of_key(two: str, rest: str) -> str | None:
    """The md5 an object's layout path ``<two>/<rest>`` names, or None when the name is not
    one DVC's layout holds (a temp file, a stray file): those are never listed or deleted."""
    md5 = two + rest
    return md5 if len(two) == 2 and _MD5_RE.match(md5) else None


@runtime_checkable
class Collectable(Protocol):
    """What garbage collection needs of a backend besides :class:`Storage`: list every
    object with its age, delete some, and read/write the ownership marker at the root."""

    def list_objects(self) -> Iterator[StoredObject]: ...

    def delete_objects(self, md5s: Iterable[str]) -> None:
        """Delete these objects (absent ones are no error)."""
        ...

    def read_marker(self) -> bytes | None:
        """The bytes of ``MARKER_NAME`` at the root, None when there is none."""
        ...

    def write_marker(self, data: bytes) -> None: ...


def md5_matches(md5: str, digest: str) -> bool:
    """Whether a hex ``digest`` of an object's bytes matches its id (``.dir`` stripped)."""
    return md5.removesuffix(".dir") == digest


def read_md5(stream: BinaryIO, chunk: int = 8 * 1024 * 1024) -> str:
    """md5 of everything left in ``stream``."""
    h = hashlib.md5()
    while True:
        data = stream.read(chunk)
        if not data:
            break
        h.update(data)
    return h.hexdigest()


def matches_stream(md5: str, body: BinaryIO) -> bool:
    """Whether the rest of ``body`` hashes to ``md5`` (``verify``); closes ``body``."""
    with body:
        return md5_matches(md5, read_md5(body))


def bytes_digest(md5: str, data: bytes) -> bytes:
    """The raw md5 digest of ``data``, once it is sure to be the object ``md5`` names: a
    backend's ``put_bytes`` never stores bytes under a name they do not hash to."""
    check_md5(md5)
    digest = hashlib.md5(data)
    if not md5_matches(md5, digest.hexdigest()):
        raise IntegrityError(f"bytes given for {md5} do not hash to it")
    return digest.digest()


@runtime_checkable
class CollectableStorage(Storage, Collectable, Protocol):
    """A backend gc can run on (both built-in backends are)."""
