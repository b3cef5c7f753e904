"""The local page's HTTP server: 127.0.0.1 only, every request checked by :class:`Guard`,
static files from the package, and allowed API calls forwarded to the daemon's socket.

Why in cpvctl and not the daemon: no new listener in cpvd and no change to the socket's
permissions; whoever can run ``cpvctl ui`` can use the socket already.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cpvctl.protocol import MAX_BODY
from cpvctl.ui.allow import allowed
from cpvctl.ui.forward import Answer, Forwarder, error_answer
from cpvctl.ui.guard import Guard
from cpvctl.ui.static_files import static_file

#: sent with every answer: scripts and styles only from this origin, no framing, no referrer
#: (the token is in the first URL)
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)


class PageServer(ThreadingHTTPServer):
    daemon_threads = True  # open event streams must not keep the process alive

    def __init__(self, port: int, guard: Guard, forwarder: Forwarder) -> None:
        self.guard = guard
        self.forwarder = forwarder
        super().__init__(("127.0.0.1", port), PageHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.guard.token}"


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the URL holds the token: keep it out of terminals and logs

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._send(error_answer(405, "method_not_allowed", "only GET and POST"))

    def _handle(self, method: str) -> None:
        verdict = self.server.guard.check(
            method,
            self.path,
            self.headers.get("Host"),
            self.headers.get("Cookie"),
            self.headers.get("Origin"),
        )
        if verdict.status:
            self.close_connection = True
            self._send(error_answer(verdict.status, "forbidden", verdict.message))
            return
        path = urlsplit(self.path).path
        if verdict.set_cookie and path == "/":
            self._redirect_home()
        elif method == "GET" and (found := static_file(path)) is not None:
            self._send(Answer(200, [("Content-Type", found[0])], found[1]))
        elif not allowed(method, path):
            self._send(error_answer(404, "not_found", f"{method} {path} is not served here"))
        elif path == "/v1/events":
            self.close_connection = True
            self.server.forwarder.stream(self.path, self._start_stream, self._write_line)
        else:
            self._forward(method)

    def _redirect_home(self) -> None:
        """Trade the token in the URL for the cookie, and drop it from the address bar."""
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", self.server.guard.cookie_header())
        self.send_header("Content-Length", "0")
        self._security_headers()
        self.end_headers()

    def _forward(self, method: str) -> None:
        body = None
        if method == "POST":
            raw = (self.headers.get("Content-Length") or "0").strip()
            if not raw.isdigit() or int(raw) > MAX_BODY:
                self.close_connection = True
                self._send(error_answer(
                    413 if raw.isdigit() else 400, "bad_request",
                    f"Content-Length must be a number of bytes up to {MAX_BODY}",
                ))
                return
            body = self.rfile.read(int(raw))
        self._send(self.server.forwarder.call(method, self.path, body))

    def _start_stream(self, answer: Answer) -> None:
        if answer.status != 200 or answer.body:
            self._send(answer)
            return
        self.send_response(200)
        for k, v in answer.headers:
            self.send_header(k, v)
        self._security_headers()
        self.end_headers()
        self.wfile.flush()

    def _write_line(self, line: bytes) -> None:
        self.wfile.write(line)
        if line in (b"\n", b"\r\n"):
            self.wfile.flush()

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for k, v in answer.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(answer.body)))
        self._security_headers()
        self.end_headers()
        self.wfile.write(answer.body)

    def _security_headers(self) -> None:
        for k, v in SECURITY_HEADERS:
            self.send_header(k, v)


def start(socket_path: str, port: int = 0, timeout: float = 30.0) -> PageServer:
    """Bind 127.0.0.1:``port`` (0: a free one) and serve on a daemon thread; the caller
    calls ``shutdown()`` and ``server_close()``."""
    server = PageServer(port, Guard(), Forwarder(socket_path, timeout))
    threading.Thread(
        target=server.serve_forever, args=(0.1,), name="cpvctl-ui", daemon=True
    ).start()
    return server
