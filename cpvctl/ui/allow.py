"""The daemon API calls the page may make, and nothing else.

Why an allow-list: the page needs reading, the event stream and a few actions the user
confirms (promote, revert, pause/resume, retry). ``push`` (names any path on disk),
``pull/object`` and ``verify`` are left to the CLI, so a leaked token cannot reach them.
"""

from __future__ import annotations

import re

_JOB = r"[A-Za-z0-9_-]{1,64}"
ALLOWED: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (method, re.compile(pattern))
    for method, pattern in (
        ("GET", r"/v1/version"),
        ("GET", r"/v1/status"),
        ("GET", r"/v1/artifacts"),
        ("GET", r"/v1/versions"),
        ("GET", r"/v1/show"),
        ("GET", rf"/v1/jobs/{_JOB}"),
        ("GET", r"/v1/events"),
        ("POST", r"/v1/promote"),
        ("POST", r"/v1/revert"),
        ("POST", r"/v1/pause"),
        ("POST", r"/v1/resume"),
        ("POST", rf"/v1/jobs/{_JOB}/retry"),
    )
)


def allowed(method: str, path: str) -> bool:
    """Whether ``method path`` (no query string) may be forwarded to the daemon."""
    return any(m == method and p.fullmatch(path) for m, p in ALLOWED)
