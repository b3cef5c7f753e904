"""cpvctl ui's server on 127.0.0.1, spoken to with http.client: the checks on every request,
the allow-list of forwarded calls, static files, and a daemon that is down.

The daemon here is a small recording HTTP server on a Unix socket: these tests are about
what the page server lets through, not about the daemon (the e2e test runs the real one).
"""

from __future__ import annotations

import http.client
import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cpvctl.ui.guard import COOKIE
from cpvctl.ui.server import PageServer, start


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).seen.append((self.command, self.path, body))
        data = json.dumps({"from": "daemon", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Cpv-Total", "42")
        self.send_header("X-Secret-Header", "never forwarded")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_daemon(short_tmp: Path) -> Iterator[tuple[Path, list[tuple[str, str, bytes]]]]:
    path = short_tmp / "d.sock"
    seen: list[tuple[str, str, bytes]] = []
    handler = type("Rec", (_Recorder,), {"seen": seen})
    server = _UnixServer(str(path), handler)
    t = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    t.start()
    yield path, seen
    server.shutdown()
    server.server_close()
    t.join(5)


@pytest.fixture
def ui(fake_daemon: tuple[Path, list[tuple[str, str, bytes]]]) -> Iterator[PageServer]:
    server = start(str(fake_daemon[0]), 0, timeout=5)
    yield server
    server.shutdown()
    server.server_close()


def call(
    server: PageServer,
    method: str,
    target: str,
    token: str | None = "cookie",
    host: str | None = None,
    body: bytes | None = None,
    origin: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Host": host or f"127.0.0.1:{server.port}"}
    if token == "cookie":
        headers["Cookie"] = f"{COOKIE}={server.guard.token}"
    if origin:
        headers["Origin"] = origin
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_it_listens_on_loopback_only(ui: PageServer) -> None:
    assert ui.server_address[0] == "127.0.0.1"
    assert ui.url().startswith(f"http://127.0.0.1:{ui.port}/?token=")


def test_the_first_load_trades_the_url_token_for_a_cookie(ui: PageServer) -> None:
    status, headers, _ = call(ui, "GET", f"/?token={ui.guard.token}", token=None)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert ui.guard.token in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, body = call(ui, "GET", "/")
    assert status == 200 and b"<title>CPV" in body
    assert "script-src 'self'" in headers["content-security-policy"]


def test_missing_and_wrong_tokens_reach_neither_page_nor_daemon(
    ui: PageServer, fake_daemon: tuple[Path, list[tuple[str, str, bytes]]]
) -> None:
    for target in ("/", "/static/app.js", "/v1/status", "/v1/versions?artifact=a/b"):
        status, _, body = call(ui, "GET", target, token=None)
        assert status == 401, target
        assert b"daemon" not in body and b"<html" not in body
        status, _, body = call(ui, "GET", target + ("&" if "?" in target else "?") + "token=x",
                               token=None)
        assert status == 403, target
    assert fake_daemon[1] == []


def test_a_rebinding_host_is_refused(
    ui: PageServer, fake_daemon: tuple[Path, list[tuple[str, str, bytes]]]
) -> None:
    status, _, _ = call(ui, "GET", "/v1/status", host=f"evil.example:{ui.port}")
    assert status == 403
    status, _, _ = call(ui, "POST", "/v1/pause", body=b"{}", origin="https://evil.example")
    assert status == 403
    assert fake_daemon[1] == []


def test_allowed_calls_are_forwarded_with_their_query_and_body(
    ui: PageServer, fake_daemon: tuple[Path, list[tuple[str, str, bytes]]]
) -> None:
    status, headers, body = call(ui, "GET", "/v1/versions?artifact=a/b&offset=100&limit=100")
    assert status == 200 and json.loads(body)["from"] == "daemon"
    assert headers["x-cpv-total"] == "42" and "x-secret-header" not in headers
    payload = json.dumps({"artifact": "a/b", "version": "v1.0.0", "stage": "prod"}).encode()
    assert call(ui, "POST", "/v1/promote", body=payload)[0] == 200
    assert call(ui, "POST", "/v1/jobs/abc123/retry", body=b"")[0] == 200
    assert fake_daemon[1] == [
        ("GET", "/v1/versions?artifact=a/b&offset=100&limit=100", b""),
        ("POST", "/v1/promote", payload),
        ("POST", "/v1/jobs/abc123/retry", b""),
    ]


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/v1/push"),
        ("GET", "/v1/pull/object?artifact=a/b&relpath=x"),
        ("GET", "/v1/pull/url?artifact=a/b&relpath=x"),  # a signed storage URL: never
        ("GET", "/v1/pull/manifest?artifact=a/b"),
        ("POST", "/v1/verify"),
        ("GET", "/metrics"),
        ("GET", "/v1/promote"),
        ("POST", "/v1/status"),
        ("GET", "/v1/jobs/../../etc"),
        ("GET", "/static/../server.py"),
    ],
)
def test_calls_outside_the_allow_list_are_not_forwarded(
    ui: PageServer, fake_daemon: tuple[Path, list[tuple[str, str, bytes]]], method: str,
    target: str,
) -> None:
    body = b"{}" if method == "POST" else None
    status, _, _ = call(ui, method, target, body=body)
    assert status == 404
    assert fake_daemon[1] == []


def test_a_stopped_daemon_is_a_502_naming_the_socket(short_tmp: Path) -> None:
    server = start(str(short_tmp / "none.sock"), 0, timeout=2)
    try:
        status, _, body = call(server, "GET", "/v1/status")
        assert status == 502
        err = json.loads(body)["error"]
        assert err["code"] == "daemon_unreachable" and "none.sock" in err["message"]
        status, _, body = call(server, "GET", "/v1/events")
        assert status == 502
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("length", "status"), [("-1", 400), ("ten", 400), ("99999999", 413)])
def test_a_bad_content_length_is_refused_without_waiting_for_a_body(
    ui: PageServer, fake_daemon: tuple[Path, list[tuple[str, str, bytes]]], length: str,
    status: int,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/pause", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{ui.port}")
        conn.putheader("Cookie", f"{COOKIE}={ui.guard.token}")
        conn.putheader("Content-Length", length)
        conn.endheaders()
        assert conn.getresponse().status == status
    finally:
        conn.close()
    assert fake_daemon[1] == []
