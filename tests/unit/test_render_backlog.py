"""How ``cpvctl status`` shows the backlog: cap, lag, recovery points, BEHIND, superseded."""

from __future__ import annotations

import time

from cpvctl.render import render_status
from cpvctl.render_backlog import rate_text


def test_rates_read_as_users_write_them() -> None:
    assert rate_text(200 << 20) == "200.0 MiB/s"
    assert rate_text(50_000_000) == "47.7 MiB/s"
    assert rate_text(512) == "512 B/s"
    assert rate_text(None) == "-"


def test_status_says_how_far_behind_and_what_was_skipped() -> None:
    now = time.time()
    text = render_status({
        "upload_cap": 20 << 20,
        "durability": {"lag_seconds": 72.0,
                       "recovery_points": {"team/m": {"at": now - 30, "age_seconds": 30.0}}},
        "behind": [{"artifact": "team/m", "waiting": 5, "coalesce": False}],
        "superseded": [{"artifact": "team/m", "path": "/w/epoch-3.pt", "at": now - 5}],
    })  # fmt: skip
    assert "upload cap: 20.0 MiB/s" in text
    assert "durability lag: 1m12s (oldest checkpoint not yet a pushed version)" in text
    assert "recovery point team/m: 30s ago" in text
    assert "BEHIND: team/m has 5 checkpoints waiting, lag 1m12s" in text
    assert "set coalesce = true on its watch or raise [storage] max_upload_rate" in text
    assert "superseded (coalesce)" in text and "/w/epoch-3.pt  5s ago" in text


def test_an_older_daemon_without_these_fields_shows_nothing_new() -> None:
    text = render_status({})
    assert "durability lag" not in text and "upload cap" not in text
