"""cpvctl ui's request checks: token (URL once, then cookie), Host (DNS rebinding), Origin."""

from __future__ import annotations

import pytest

from cpvctl.ui.guard import COOKIE, Guard, host_name

G = Guard(token="s3cret-token")
OK_HOST = "127.0.0.1:8123"


def check(target: str = "/", host: str | None = OK_HOST, cookie: str | None = None,
          origin: str | None = None, method: str = "GET") -> tuple[int, bool]:
    v = G.check(method, target, host, cookie, origin)
    return v.status, v.set_cookie


@pytest.mark.parametrize(
    ("host", "name"),
    [("127.0.0.1:80", "127.0.0.1"), ("LOCALHOST", "localhost"), ("[::1]:9", "[::1]"),
     ("evil.example:8123", "evil.example"), ("", None), (None, None)],
)
def test_host_name(host: str | None, name: str | None) -> None:
    assert host_name(host) == name


def test_the_token_in_the_url_is_accepted_and_becomes_the_cookie() -> None:
    assert check("/?token=s3cret-token") == (0, True)
    assert check("/v1/status?token=s3cret-token", method="POST") == (0, False)


def test_the_cookie_alone_is_accepted() -> None:
    assert check("/v1/status", cookie=f"other=1; {COOKIE}=s3cret-token") == (0, False)


def test_a_missing_token_is_401_and_a_wrong_one_403() -> None:
    assert check("/")[0] == 401
    assert check("/", cookie="other=1")[0] == 401
    assert check("/?token=nope")[0] == 403
    assert check("/", cookie=f"{COOKIE}=nope")[0] == 403
    # a wrong token in the URL is not rescued by a right cookie (no mixing)
    assert check("/?token=nope", cookie=f"{COOKIE}=s3cret-token")[0] == 403


def test_a_foreign_host_is_refused_even_with_the_token() -> None:
    """DNS rebinding: a site's name resolved to 127.0.0.1 still sends its own Host."""
    assert check("/?token=s3cret-token", host="evil.example:8123")[0] == 403
    assert check("/?token=s3cret-token", host=None)[0] == 403
    # any local port: `ssh -L 9999:127.0.0.1:PORT` arrives with another port
    assert check("/?token=s3cret-token", host="localhost:9999")[0] == 0


def test_a_cross_site_origin_is_refused() -> None:
    cookie = f"{COOKIE}=s3cret-token"

    def post(origin: str) -> int:
        return check("/v1/promote", cookie=cookie, origin=origin, method="POST")[0]

    assert post("https://evil.example") == 403
    assert post("null") == 403
    assert post("http://127.0.0.1:8123") == 0


def test_the_cookie_is_httponly_and_strict() -> None:
    header = G.cookie_header()
    assert header.startswith(f"{COOKIE}=s3cret-token;")
    assert "HttpOnly" in header and "SameSite=Strict" in header


def test_each_guard_gets_its_own_long_random_token() -> None:
    a, b = Guard(), Guard()
    assert a.token != b.token and len(a.token) >= 40
