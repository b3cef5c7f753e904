"""A file name that is not valid UTF-8 (issue 15 #7) is versioned like any other, and its name
comes back byte for byte: in the queue and ledger, the tag message, ``show`` and ``pull``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, wait_for

RAW_NAME = b"bad\xff\xfe.bin"


def test_a_name_that_is_not_utf8_is_versioned_and_kept_losslessly(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "t/raw")])
    payload = os.urandom(3000)
    with d:
        with open(os.path.join(os.fsencode(ck), RAW_NAME), "wb") as f:
            f.write(payload)
        wait_for(lambda: len(d.client().versions("t/raw")) == 1, timeout=60, what="a version")
        shown = d.client().show("t/raw", "v1.0.0")
        assert os.fsencode(shown["name"]) == RAW_NAME
        out = short_tmp / "out"
        got = Path(d.client().pull("t/raw", "v1.0.0", out))
        assert os.fsencode(got.name) == RAW_NAME and got.read_bytes() == payload
        # the CLI prints it (escaped) instead of crashing on it
        res = cpvctl(d.socket, "versions", "t/raw")
        assert res.returncode == 0, res.stderr
        res = cpvctl(d.socket, "status")
        assert res.returncode == 0, res.stderr
    with d:  # a restart's rescan finds it handled: no second version
        time.sleep(2.5)
        assert len(d.client().versions("t/raw")) == 1
        assert "surrogates not allowed" not in d.log()
