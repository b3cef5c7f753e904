"""A real webhook receiver for tests: ``http.server`` on 127.0.0.1 in a thread.

It records every request (headers, body) and answers from a script: ``answers`` holds the
statuses to give next (then 204), ``delay`` makes it slow. ``stop()`` closes the port (a
receiver that is down refuses connections); ``start()`` opens the same port again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers.get("x-cpv-event-id", "")

    def signed_with(self, secret: str) -> bool:
        want = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-cpv-signature", ""), want)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    location: str = "http://127.0.0.1:1/elsewhere"
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cpv/secret-path-token"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if owner.delay:
                    time.sleep(owner.delay)
                with owner.lock:
                    status = owner.answers.pop(0) if owner.answers else 204
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    owner.received.append(Received(headers, body, status))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", owner.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def accepted_ids(self) -> set[str]:
        return {r.event_id for r in self.accepted()}
