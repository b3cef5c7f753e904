"""Reading one object of a pull straight from the storage, with the URL the daemon signed
(cpvd.api.direct_pull), instead of through the daemon's socket.

Only the URL comes from the daemon; the bytes are checked against the manifest's md5 as
relayed ones are. Any failure to reach or read the URL (no route from this machine to the
storage, a proxy, a custom CA the daemon trusts and this process does not, an expired
URL) is not an error of the pull: the caller falls back to the relay.
"""

from __future__ import annotations

import http.client
from typing import Any

#: what reading a URL can raise that means "use the relay instead" (urllib's URLError and
#: HTTPError are OSErrors)
FALLBACK_ERRORS = (OSError, http.client.HTTPException, ValueError)


def signed_url(answer: Any) -> str | None:
    """The URL in a ``/pull/url`` answer, if it is one this client will open."""
    url = answer.get("url") if isinstance(answer, dict) else None
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    return None


def open_url(url: str, timeout: float) -> Any:
    """The response of a GET of ``url`` (status 200), ready to ``read``; the caller closes."""
    import urllib.request  # here: it loads ssl, and most cpvctl commands never pull

    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    resp = urllib.request.urlopen(request, timeout=timeout)
    if resp.status != 200:
        resp.close()
        raise ValueError(f"unexpected status {resp.status} from the storage")
    return resp
