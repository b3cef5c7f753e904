"""``python -m benchmarks.cost_child``: the processes of the pull and cost groups whose CPU
time or steps must be read apart from the harness.

- ``trainer N``: a CPU-bound "training loop": each step hashes a 1 MiB buffer ``N`` times;
  prints ``start end`` (``time.monotonic()``, one clock for every process) per step until
  its stdin reaches EOF.
- ``md5-upload FILE ENDPOINT BUCKET KEY SIGN``: the baseline of the cost group: md5 of the
  file, then a boto3 upload (8 MiB parts, 10 threads: the fastest here, FIELD-NOTES), with
  payload signing on or off; prints JSON with the CPU seconds of that work alone (imports
  and client set-up excluded), its wall time and the md5.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time

MIB = 1024 * 1024


def trainer(per_step: int) -> None:
    buf = os.urandom(MIB)
    stop = threading.Event()

    def wait_eof() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=wait_eof, daemon=True).start()
    out = sys.stdout
    while not stop.is_set():
        t0 = time.monotonic()
        for _ in range(per_step):
            hashlib.sha1(buf).digest()
        out.write(f"{t0:.6f} {time.monotonic():.6f}\n")
        out.flush()


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def md5_upload(path: str, endpoint: str, bucket: str, key: str, sign: bool) -> None:
    import boto3
    import boto3.s3.transfer
    import botocore.config

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=botocore.config.Config(
            max_pool_connections=32, s3={"payload_signing_enabled": sign}
        ),
    )
    config = boto3.s3.transfer.TransferConfig(
        multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=10
    )
    c0, t0 = cpu(), time.perf_counter()
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    s3.upload_file(path, bucket, key, Config=config)
    report = {"cpu": cpu() - c0, "wall": time.perf_counter() - t0, "md5": h.hexdigest()}
    print(json.dumps(report), flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["trainer"]:
        trainer(int(argv[1]))
    elif argv[:1] == ["md5-upload"] and len(argv) == 6:
        md5_upload(argv[1], argv[2], argv[3], argv[4], argv[5] == "sign")
    else:
        raise SystemExit(f"usage: trainer N | md5-upload FILE ENDPOINT BUCKET KEY SIGN: {argv}")


if __name__ == "__main__":
    main(sys.argv[1:])
