"""The retry knobs: ``[daemon] retry_max_seconds`` caps the queue's backoff (and the
pusher's); ``[storage] connect_timeout / read_timeout / max_attempts`` bound one S3 call.
Fault tests need seconds, not the production minutes; users on flaky links need them too."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from cpvd.config.load import parse_config
from cpvd.errors import ConfigError
from cpvd.state.queue import JobQueue, backoff_delay

KNOBS = """
[daemon]
retry_max_seconds = 2.5
[storage]
url = "s3://bucket/x"
connect_timeout = 1.5
read_timeout = 4
max_attempts = 2
"""


def test_knobs_are_read() -> None:
    cfg = parse_config(KNOBS, Path("/etc/cpvd.toml"))
    assert cfg.daemon.retry_max_seconds == 2.5
    assert (cfg.storage.connect_timeout, cfg.storage.read_timeout) == (1.5, 4.0)
    assert cfg.storage.max_attempts == 2


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[daemon]\nretry_max_seconds = 0\n", "retry_max_seconds"),
        ('[storage]\nurl = "s3://bucket/x"\nread_timeout = -1\n', "read_timeout"),
        ('[storage]\nurl = "s3://bucket/x"\nmax_attempts = 0\n', "max_attempts"),
    ],
)
def test_bad_knobs_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(text, Path("/etc/cpvd.toml"))


def test_backoff_cap_bounds_every_delay(tmp_path: Path) -> None:
    assert max(backoff_delay(n, random.Random(n), cap=2.0) for n in range(1, 30)) <= 2.0
    q = JobQueue(tmp_path / "q.db", max_attempts=100, backoff_cap=2.0)
    try:
        job = q.add("a", "/a/1")
        now = time.time()
        for _ in range(12):
            assert q.claim_next(now=now + 1e6) is not None
            job = q.fail(job.id, "unreachable", retryable=True, now=now)
            assert job.next_attempt_at - now <= 2.0
    finally:
        q.close()


def test_nice_defaults_to_10_and_is_read() -> None:
    assert parse_config("", Path("/etc/cpvd.toml")).daemon.nice == 10
    assert parse_config("[daemon]\nnice = 0\n", Path("/etc/cpvd.toml")).daemon.nice == 0
    assert parse_config("[daemon]\nnice = 19\n", Path("/etc/cpvd.toml")).daemon.nice == 19


@pytest.mark.parametrize("value", ["-1", "20", "2.5", '"low"'])
def test_bad_nice_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[daemon\].*nice|nice.*0"):
        parse_config(f"[daemon]\nnice = {value}\n", Path("/etc/cpvd.toml"))
