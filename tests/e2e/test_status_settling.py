"""``cpvctl status`` through the real daemon: a file in its quiet period is listed as
SETTLING with the quiet time left; a file that fails its format check as WAITING, with the
reason and since when (the SINCE column was always empty)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, wait_for


def test_status_lists_settling_and_waiting(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    slow, quick = short_tmp / "slow", short_tmp / "quick"
    d = daemon_factory(
        watches=[Watch(slow, "demo/slow", settle_seconds=3600), Watch(quick, "demo/quick")]
    )
    with d:
        (slow / "epoch-1.pt").write_bytes(b"x" * 100)
        (quick / "epoch-1.safetensors").write_text("hello\n")  # not valid safetensors

        def listed() -> bool:
            st = d.client().status()
            return bool(st.get("settling")) and bool(st.get("waiting"))

        wait_for(listed, what="a settling and a waiting checkpoint")
        st = d.client().status()
        [settling] = st["settling"]
        assert settling["path"] == str(slow / "epoch-1.pt")
        assert 0 < settling["quiet_left"] <= 3600
        [waiting] = st["waiting"]
        assert waiting["path"] == str(quick / "epoch-1.safetensors")
        assert "safetensors" in waiting["reason"]
        since = datetime.fromisoformat(waiting["since"])
        assert since.tzinfo is not None
        out = cpvctl(d.socket, "status").stdout
        assert "SETTLING" in out and "QUIET LEFT" in out
        row = next(ln for ln in out.splitlines() if ln.startswith(waiting["path"]))
        assert since.astimezone().strftime("%Y-%m-%d %H:%M") in row
