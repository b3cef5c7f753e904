"""A TCP forwarder on 127.0.0.1 that counts the bytes a client sends upstream, with the time
they passed: what a bandwidth cap promises is measured on the wire, not in the daemon.
Used by the backlog benchmark and by tests/integration/test_upload_rate.py."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class CountingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: (monotonic time, bytes) of every chunk forwarded towards the upstream
        self.sent: list[tuple[float, int]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            t = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(1 << 16)
                    if not data:
                        return
                    if src is client:
                        with self._lock:
                            self.sent.append((time.monotonic(), len(data)))
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def windows(
        self,
        seconds: float,
        payload: int | None = None,
        step: float = 0.25,
        between: tuple[float, float] | None = None,
        start_after: float = 0.0,
    ) -> list[int]:
        """Bytes sent in every ``seconds`` window (sliding by ``step``) that lies wholly
        between the first byte sent and the moment ``payload`` bytes had passed (the
        uploaded bodies, before the completion and reads that follow them), or within
        ``between`` (monotonic start and end) when given; ``start_after`` seconds later
        (once running: the first socket buffers fill at once)."""
        with self._lock:
            sent = list(self.sent)
        if not sent:
            return []
        first, last, total = sent[0][0], sent[-1][0], 0
        if between is not None:
            first, last = between
        for t, n in sent:
            total += n
            if payload is not None and total >= payload:
                last = t
                break
        out = []
        start = first + start_after
        while start + seconds <= last:
            out.append(sum(n for t, n in sent if start <= t < start + seconds))
            start += step
        return out

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
