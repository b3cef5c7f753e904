"""Secrets never reach a log line, an error message, ``status`` or an event.

A Git remote or storage URL can carry credentials (``https://x-token-auth:SECRET@host/…``);
every message that may hold such a URL (a git failure's stderr, a remote's name in a log
line) passes through :func:`mask_url` first.
"""

from __future__ import annotations

import re

_URL_SECRET = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s]+@")


def mask_url(text: str) -> str:
    """Hide ``user:token@`` in URLs (``https://x-token-auth:SECRET@bitbucket.org/...``)."""
    return _URL_SECRET.sub(r"\g<scheme>***@", text)
