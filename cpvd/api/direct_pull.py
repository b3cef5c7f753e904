"""``GET /v1/pull/url``: a short-lived URL from which ``cpvctl pull`` reads an object
straight from the storage.

Relayed through the daemon, every byte of a pull crossed two more sockets and two more
processes' buffers: on 2 cores a 1 GiB pull took about three times a raw boto3 download
(issue 18). With a presigned GET the client streams from S3 itself and checks the md5 the
manifest names, as it always did; the daemon's credentials never leave it. The URL reads
one object for ``URL_SECONDS`` (S3 checks it when the GET starts, so a long download
continues past it); only a client the socket admits (cpvd.api.server's peer checks) gets
one, and it could read the same bytes through ``/pull/object`` anyway. Storage without
such URLs (a local directory, which the client may not be allowed to read) answers
``not_found`` and the client uses the relay.
"""

from __future__ import annotations

from typing import Any

from cpvctl.protocol import ProtocolError
from cpvd.api.queries import Queries

URL_SECONDS = 600


async def pull_entry(
    queries: Queries, name: str, version: str | None, relpath: str, include_pruned: bool
) -> Any:
    """The manifest entry of ``relpath`` in ``name@version`` (resolved once, like a pull;
    a pruned version only with ``include_pruned``)."""
    manifest = await queries.manifest(name, version, include_pruned, check=False)
    entry = next((f for f in manifest["files"] if f["relpath"] == relpath), None)
    if entry is None:
        raise ProtocolError("not_found", f"{name}@{manifest['version']} has no file {relpath!r}")
    return entry


async def direct_url(queries: Queries, entry: dict[str, Any]) -> dict[str, Any]:
    """``{"url", "md5", "size", "expires_in"}`` for one manifest entry."""
    presign = getattr(queries.engine.storage, "presigned_get", None)
    if presign is None:
        raise ProtocolError("not_found", "this storage has no direct URLs; use /pull/object")
    # on an io thread: signing may first refresh credentials (an instance role) over the network
    url = await queries.executors.on_io(presign, entry["md5"], URL_SECONDS)
    return {"url": url, "md5": entry["md5"], "size": entry["size"], "expires_in": URL_SECONDS}
