"""The calls a download needs from a connection to cpvd, as a protocol.

``cpvctl.pull`` streams objects through whatever satisfies :class:`Transport`; ``Client``
does, and so can a test double. That keeps the dependency one way (client -> pull ->
transport) instead of a cycle between the client and the code it calls.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable
from typing import Any, Protocol, TypedDict

#: a decoded JSON value
Json = Any

#: ``progress(bytes_done, bytes_total_or_None)``, called as a download advances
ProgressCallback = Callable[[int, int | None], None]
#: where a pull writes: a directory path
PathArg = str | os.PathLike[str]


class PullOptions(TypedDict, total=False):
    """The keyword options of a pull, named once for ``Client.pull`` and ``pull_detailed``."""

    progress: ProgressCallback | None
    force: bool
    #: restore a pruned version anyway (refused otherwise: gc may have deleted its objects)
    include_pruned: bool


class Transport(Protocol):
    """The two calls a download makes: read the manifest, stream each object. ``Client``
    has them (with more optional arguments, which a protocol need not name)."""

    #: seconds without data before a read gives up
    timeout: float

    def request(self, method: str, path: str, query: dict[str, Any] | None = None) -> Json:
        """One JSON request and its decoded answer."""
        ...

    def open(
        self, method: str, path: str, query: dict[str, Any] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The open connection and its response (status < 400); the caller closes both."""
        ...
