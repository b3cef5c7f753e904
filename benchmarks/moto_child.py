"""``python -m benchmarks.moto_child``: moto's ThreadedMotoServer in its own process.

Prints the port on stdout, serves until stdin reaches EOF (the harness closes it, or dies),
then stops the server.
"""

from __future__ import annotations

import logging
import socket
import sys


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        print(port, flush=True)
        sys.stdin.buffer.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
