"""Forward one allowed request to the daemon's Unix socket and copy the answer back.

The daemon's answers are passed through byte for byte (JSON, or the SSE stream line by line
as it arrives); only the headers the page needs are kept.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass

from cpvctl.client import UnixHTTPConnection
from cpvctl.protocol import CPV_VERSION, MAX_BODY

#: headers of the daemon's answer the page sees
KEPT_HEADERS = ("Content-Type", "X-Cpv-Total")

Write = Callable[[bytes], None]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def error_answer(status: int, code: str, message: str) -> Answer:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Answer(status, [("Content-Type", "application/json")], body)


def unreachable(socket_path: str, exc: BaseException) -> Answer:
    return error_answer(
        502, "daemon_unreachable", f"cpvd is not reachable at {socket_path}: {exc}"
    )


@dataclass(frozen=True)
class Forwarder:
    socket_path: str
    timeout: float = 30.0

    def open(
        self, method: str, target: str, body: bytes | None
    ) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        """Send the request; the caller reads and closes. Raises OSError/HTTPException."""
        if body is not None and len(body) > MAX_BODY:
            raise ValueError(f"request body over {MAX_BODY} bytes")
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        headers = {"User-Agent": f"cpvctl-ui/{CPV_VERSION}", "Accept": "*/*"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=body, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def call(self, method: str, target: str, body: bytes | None) -> Answer:
        """One JSON round trip, answered as the daemon answered (or 502 when it is down)."""
        try:
            conn, resp = self.open(method, target, body)
        except (OSError, http.client.HTTPException) as exc:
            return unreachable(self.socket_path, exc)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            return unreachable(self.socket_path, exc)
        finally:
            conn.close()
        return Answer(resp.status, kept_headers(resp), data)

    def stream(self, target: str, start: Callable[[Answer], None], write: Write) -> None:
        """Copy the SSE stream line by line until either side closes. ``start`` sends the
        status and headers (with an empty body) before the first line."""
        try:
            conn, resp = self.open("GET", target, None)
        except (OSError, http.client.HTTPException) as exc:
            start(unreachable(self.socket_path, exc))
            return
        try:
            if conn.sock is not None:
                conn.sock.settimeout(None)  # the daemon sends keep-alives; wait for them
            start(Answer(resp.status, kept_headers(resp), b""))
            while line := resp.readline():
                write(line)
        except (OSError, http.client.HTTPException):
            pass  # either end went away: the page's EventSource reconnects
        finally:
            conn.close()


def kept_headers(resp: http.client.HTTPResponse) -> list[tuple[str, str]]:
    return [(k, v) for k in KEPT_HEADERS if (v := resp.getheader(k)) is not None]
