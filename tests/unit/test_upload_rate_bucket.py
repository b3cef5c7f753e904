"""The token bucket behind ``[storage] max_upload_rate`` on a fake clock, and the rate
syntax the config accepts."""

from __future__ import annotations

import pytest

from cpvd.config.load import parse_config
from cpvd.errors import ConfigError
from cpvd.storage.rate import TokenBucket, metered


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_steady_sender_gets_the_rate_after_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=100.0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        bucket.take(50)
    # 5000 bytes at 1000/s, of which the first 100 passed as a burst
    assert clock.now - 100.0 == pytest.approx(4.9)


def test_idle_time_does_not_bank_more_than_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=100.0, clock=clock, sleep=clock.sleep)
    clock.now += 3600  # an hour idle
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(1000) == pytest.approx(1.0)


def test_callers_queue_behind_each_other() -> None:
    """Reservations made at the same moment (several threads) wait in turn."""
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=0.0, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve(500) for _ in range(4)]
    assert waits == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_rewinds_give_no_credit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=0.0, clock=clock, sleep=clock.sleep)
    assert bucket.reserve(-500) == 0.0
    assert bucket.reserve(500) == pytest.approx(0.5)


def test_metered_progress_takes_before_reporting() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=0.0, clock=clock, sleep=clock.sleep)
    seen: list[tuple[float, int]] = []
    report = metered(lambda n: seen.append((clock.now, n)), bucket)
    assert report is not None
    report(2000)
    assert seen == [(pytest.approx(102.0), 2000)]
    assert metered(None, None) is None


@pytest.mark.parametrize(
    ("text", "rate"),
    [('"200MiB"', 200 << 20), ('"50MB"', 50_000_000), ("1048576", 1 << 20),
     ('"1.5 GiB/s"', 3 << 29), ('"64kib"', 64 << 10)],
)  # fmt: skip
def test_rates_the_config_accepts(text: str, rate: int) -> None:
    cfg = parse_config(f"[storage]\nmax_upload_rate = {text}\n", "/etc/cpvd.toml")
    assert cfg.storage.max_upload_rate == rate


@pytest.mark.parametrize("text", ['"fast"', "0", "-5", '"10 XB"', "true", '""'])
def test_a_bad_rate_names_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"[storage]\nmax_upload_rate = {text}\n", "/etc/cpvd.toml")
    assert "/etc/cpvd.toml: [storage] max_upload_rate:" in err.value.message
