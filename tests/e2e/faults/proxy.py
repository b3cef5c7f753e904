"""A TCP forwarder on 127.0.0.1 that a test can cut: the storage's network, made faulty.

Modes (``proxy.mode = ...``):

- ``"pass"``: forward to the upstream (moto).
- ``"down"``: the port stops listening (connection refused, like a stopped server) and every
  open connection is cut, mid-request if need be.
- ``"503"``: every request gets ``503 Slow Down`` (S3's throttling answer) without reaching
  moto.
- ``"hang"``: connections are accepted and never answered (read timeouts).

And :meth:`FaultProxy.freeze`: the connections open now stop forwarding for a while (a
stalled link: no byte moves, nothing is closed) while new connections pass.

Moto's state lives in the test process, so an outage through the proxy loses nothing on the
server side: only the network fails, which is the fault under test.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import threading
import time


class FaultProxy:
    def __init__(
        self, upstream_host: str, upstream_port: int, upload_rate: float | None = None
    ) -> None:
        """``upload_rate``: bytes/s per connection towards the upstream (None: unlimited), so
        a test can cut an upload that is surely still running."""
        self.upstream = (upstream_host, upstream_port)
        self.upload_rate = upload_rate
        self._mode = "pass"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.port = 0
        self.served_503 = 0
        self.refused_or_cut = 0
        #: bytes forwarded from clients towards the upstream (request bodies, headers)
        self.bytes_up = 0
        self._frozen: set[int] = set()  # ids of the pumps frozen now
        self._frozen_until = 0.0
        self._pump_ids: set[int] = set()
        self._ids = itertools.count()
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._pumps: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.1)
        self.port = s.getsockname()[1]
        self._listener = s

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        assert mode in ("pass", "down", "503", "hang"), mode
        with self._lock:
            old, self._mode = self._mode, mode
            if mode != "pass":
                self._cut_all()
            if mode == "down" and self._listener is not None:
                self._listener.close()
                self._listener = None
            elif old == "down" and mode != "down":
                self._listen()

    def _cut_all(self) -> None:
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
            self.refused_or_cut += 1
        self._conns.clear()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                mode = self._mode
                self._conns.append(client)
            if mode == "pass":
                self._forward(client)
            elif mode == "503":
                self._spawn(self._answer_503, client)
            # "hang": keep the socket open and silent until the mode changes

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=target, args=args, daemon=True)
        self._pumps = [p for p in self._pumps if p.is_alive()]
        self._pumps.append(t)
        t.start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        with self._lock:
            self._conns.append(upstream)
        self._spawn(self._pump, client, upstream)

    def freeze(self, seconds: float) -> int:
        """Stop forwarding on every connection open now, for ``seconds`` (bounded); new
        connections pass. Returns how many connections were frozen."""
        with self._lock:
            self._frozen = set(self._pump_ids)
            self._frozen_until = time.monotonic() + seconds
            return len(self._frozen)

    def _is_frozen(self, me: int) -> bool:
        return me in self._frozen and time.monotonic() < self._frozen_until

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        me = next(self._ids)
        with self._lock:
            self._pump_ids.add(me)
        try:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while not self._stop.is_set():
                if self._is_frozen(me):
                    time.sleep(0.05)
                    continue
                for key, _ in sel.select(timeout=0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(1 << 16)
                    if not data:
                        return
                    if src is a and self.upload_rate:
                        time.sleep(len(data) / self.upload_rate)
                    if src is a:
                        with self._lock:
                            self.bytes_up += len(data)
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pump_ids.discard(me)
            sel.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def _answer_503(self, client: socket.socket) -> None:
        client.settimeout(5)
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = client.recv(65536)
                if not chunk:
                    return
                buf += chunk
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>"
            )
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            self.served_503 += 1
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._cut_all()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._thread.join(5)
        for p in self._pumps:
            p.join(5)
