"""The one backoff policy (cpvd.retry)."""

from __future__ import annotations

import random

import pytest

from cpvd.retry import Backoff


def test_delays_double_from_base_up_to_the_cap() -> None:
    b = Backoff(base=1.0, cap=10.0)
    assert [b.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.delay(0) == 1.0  # an attempt count of 0 is treated as the first


def test_jitter_stays_between_half_and_all_of_the_nominal_delay() -> None:
    b = Backoff(base=1.0, cap=300.0, jitter=True)
    rng = random.Random(7)
    for attempt in range(1, 12):
        nominal = Backoff(base=1.0, cap=300.0).delay(attempt)
        d = b.delay(attempt, rng)
        assert nominal / 2 <= d <= nominal


@pytest.mark.parametrize(
    ("previous", "expected"), [(None, 0.5), (0.1, 0.5), (0.5, 1.0), (4.0, 8.0), (20.0, 30.0)]
)
def test_after_doubles_the_last_delay_within_base_and_cap(
    previous: float | None, expected: float
) -> None:
    assert Backoff(base=0.5, cap=30.0).after(previous) == expected
