"""A link that stops moving bytes in the middle of a part: the daemon cuts the part off
after ``[storage] stall_seconds``, publishes ``upload.stalled`` and sends the part again on
a new connection, while the frozen connections would still hang (far longer than the test).
Real daemon, moto behind a TCP proxy that freezes the connections open at that moment."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from tests.e2e.faults.conftest import S3Target, s3_daemon_kw, settled
from tests.e2e.faults.proxy import FaultProxy
from tests.e2e.faults.test_kill_upload import parts_uploaded, uploads
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "llm/stalled"
MIB = 1024 * 1024


def test_a_stalled_part_is_cut_off_and_sent_again(
    short_tmp: Path, s3: S3Target, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    u = urlparse(s3.endpoint)
    # slow enough that the upload is surely still running when the link freezes
    proxy = FaultProxy(u.hostname or "127.0.0.1", int(u.port or 80), upload_rate=4 * MIB).start()
    try:
        ck = short_tmp / "ck"
        d = daemon_factory(
            watches=[Watch(ck, ARTIFACT)],
            extra_storage={"part_size_mb": 5, "concurrency": 2, "stall_seconds": 2},
            **s3_daemon_kw(s3, proxy.url),
        )
        d.start()
        data = os.urandom(40 * MIB)
        md5 = hashlib.md5(data).hexdigest()
        tmp = short_tmp / "staging.bin"
        tmp.write_bytes(data)
        os.replace(tmp, ck / "model.bin")
        wait_for(lambda: parts_uploaded(s3) >= 1, timeout=120, interval=0.05, what="a part")
        assert proxy.freeze(3600) >= 1, "no connection open to freeze"
        wait_for(lambda: settled(d, None, {md5: ARTIFACT}), timeout=300, interval=0.5,
                 what="the version despite the frozen link")  # fmt: skip
        events = d.client().recent_events(count=1000)["events"]
        stalled = [e["data"] for e in events if e["type"] == "upload.stalled"]
        assert stalled, [e["type"] for e in events]
        assert all(s["md5"] == md5 and s["seconds"] >= 1.8 for s in stalled), stalled
        assert uploads(s3) == []
        c = s3.client()
        try:
            key = f"cpv/files/md5/{md5[:2]}/{md5[2:]}"
            stored = c.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        finally:
            c.close()
        assert hashlib.md5(stored).hexdigest() == md5
        assert d.stop() == 0
    finally:
        proxy.close()
