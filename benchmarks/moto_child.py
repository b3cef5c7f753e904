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


def prefill(path: str) -> None:
    """Create buckets and objects straight in moto's backend, from ``bucket\tkey\thex``
    lines (the gc benchmark's 100,000 objects, in seconds instead of minutes of PUTs)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    buckets: set[str] = set()
    with open(path) as f:
        for line in f:
            bucket, key, data = line.rstrip("\n").split("\t")
            if bucket not in buckets:
                backend.create_bucket(bucket, "us-east-1")
                buckets.add(bucket)
            backend.put_object(bucket, key, bytes.fromhex(data))


def main() -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    if len(sys.argv) == 3 and sys.argv[1] == "--prefill":
        prefill(sys.argv[2])
    try:
        print(port, flush=True)
        sys.stdin.buffer.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
