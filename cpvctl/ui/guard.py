"""Who may use the local page: the token check, the Host check and the Origin check.

Why a token: any local user (and any web page the browser visits) can reach a port on
127.0.0.1, while the daemon's socket is private to its user. The token, printed only to the
user who ran ``cpvctl ui``, keeps the page as private as the socket. Why the Host check: a
DNS-rebinding site would otherwise talk to the port under its own name. Only the host name is
checked, not the port, so ``ssh -L 8080:127.0.0.1:PORT`` (another local port) works.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

COOKIE = "cpv_ui_token"
LOOPBACK_NAMES = frozenset(("127.0.0.1", "localhost", "[::1]"))


@dataclass(frozen=True)
class Verdict:
    """``status`` 0 means allowed; otherwise the HTTP status and a message that names no
    registry data. ``set_cookie``: the token came in the URL and should become the cookie."""

    status: int
    message: str = ""
    set_cookie: bool = False


def host_name(host: str | None) -> str | None:
    """``127.0.0.1`` from ``127.0.0.1:8080``; ``[::1]`` kept bracketed; None when absent."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else None
    return host.rsplit(":", 1)[0] if ":" in host else host


def cookie_token(header: str | None) -> str | None:
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def url_token(target: str) -> str | None:
    values = parse_qs(urlsplit(target).query).get("token")
    return values[-1] if values else None


@dataclass(frozen=True)
class Guard:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(
            candidate.encode("utf-8", "replace"), self.token.encode()
        )

    def check(
        self, method: str, target: str, host: str | None, cookie: str | None, origin: str | None
    ) -> Verdict:
        if host_name(host) not in LOOPBACK_NAMES:
            return Verdict(403, "the Host header must be 127.0.0.1 or localhost (DNS rebinding)")
        if origin is not None and host_name(urlsplit(origin).netloc) not in LOOPBACK_NAMES:
            return Verdict(403, "requests from other sites are refused")
        from_url, from_cookie = url_token(target), cookie_token(cookie)
        if from_url is None and from_cookie is None:
            return Verdict(401, "no token: open the http://127.0.0.1:PORT/?token=... address "
                                "that cpvctl ui printed")
        if self._matches(from_url):
            return Verdict(0, set_cookie=method == "GET")
        if from_url is None and self._matches(from_cookie):
            return Verdict(0)
        return Verdict(403, "wrong token: use the address cpvctl ui printed at its start")

    def cookie_header(self) -> str:
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
