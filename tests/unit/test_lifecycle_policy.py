"""Best and retention decisions (pure functions) and their config keys."""

from __future__ import annotations

import pytest

from cpvd.config.lifecycle import KeepConfig
from cpvd.config.load import parse_config
from cpvd.errors import ConfigError
from cpvd.lifecycle.policy import DAY, Entry, metric_value, pick_best, plan_prune

NOW = 1_000 * DAY


def history(metrics: list[float | None], **flags: dict[str, bool]) -> list[Entry]:
    """Versions v1.0.0 .. v1.(n-1).0 one day apart, newest first (as the index keeps them)."""
    n = len(metrics)
    out = [
        Entry(
            version=f"v1.{i}.0",
            ordinal=i + 1,
            created=NOW - (n - i) * DAY,
            metric=m,
            staged=f"v1.{i}.0" in flags.get("staged", {}),
            explicit=f"v1.{i}.0" in flags.get("explicit", {}),
            pruned=f"v1.{i}.0" in flags.get("pruned", {}),
        )
        for i, m in enumerate(metrics)
    ]
    return out[::-1]


def prune(
    entries: list[Entry],
    mode: str | None = "min",
    protected: frozenset[str] = frozenset(),
    **keep: int,
) -> list[str]:
    return plan_prune(entries, KeepConfig(**keep), mode=mode, protected=protected, now=NOW)


def test_keep_last_prunes_the_older_ones_newest_first() -> None:
    assert prune(history([5, 4, 3, 2, 1, 0]), last=3) == ["v1.2.0", "v1.1.0", "v1.0.0"]


def test_the_newest_version_is_kept_whatever_keep_says() -> None:
    assert prune(history([5, 4, 3]), last=0) == ["v1.1.0", "v1.0.0"]


def test_keep_best_keeps_the_best_by_the_metric_and_mode() -> None:
    e = history([0.9, 0.2, 0.5, 0.1, 0.7, 0.8])
    assert prune(e, last=1, best=2, mode="min") == ["v1.4.0", "v1.2.0", "v1.0.0"]
    assert prune(e, last=1, best=2, mode="max") == ["v1.4.0", "v1.3.0", "v1.2.0", "v1.1.0"]


def test_a_version_without_the_metric_is_never_kept_as_best() -> None:
    e = history([None, None, 0.5, None])
    assert prune(e, last=1, best=1) == ["v1.1.0", "v1.0.0"]


def test_keep_every_nth_counts_from_the_first_version_ever() -> None:
    e = history([0] * 7, pruned={"v1.0.0": True})
    # ordinals 3 and 6 (v1.2.0, v1.5.0) are kept; v1.6.0 is the newest
    assert prune(e, every=3) == ["v1.4.0", "v1.3.0", "v1.1.0"]


def test_keep_days_keeps_every_younger_version() -> None:
    # one day apart, the newest a day old: v1.5.0 and v1.4.0 are younger than 3 days
    assert prune(history([0] * 6), days=3) == ["v1.3.0", "v1.2.0", "v1.1.0", "v1.0.0"]


def test_protections_hold_whatever_keep_says() -> None:
    e = history([0] * 6, staged={"v1.1.0": True}, explicit={"v1.2.0": True})
    assert prune(e, last=1, protected=frozenset({"v1.3.0"})) == ["v1.4.0", "v1.0.0"]


def test_explicit_submissions_are_pruned_only_with_keep_explicit_false() -> None:
    e = history([0] * 3, explicit={"v1.0.0": True})
    assert prune(e, last=1) == ["v1.1.0"]
    assert plan_prune(
        e, KeepConfig(last=1, explicit=False), mode=None, protected=frozenset(), now=NOW
    ) == ["v1.1.0", "v1.0.0"]


def test_already_pruned_versions_are_not_pruned_again() -> None:
    e = history([0] * 4, pruned={"v1.0.0": True, "v1.1.0": True})
    assert prune(e, last=1) == ["v1.2.0"]
    assert prune(history([0], pruned={"v1.0.0": True}), last=1) == []


def test_pick_best_moves_only_on_a_strictly_better_value() -> None:
    e = history([0.5, None, 0.5, 0.3, 0.4])[::-1]  # oldest first
    assert pick_best(e, None, "min").version == "v1.3.0"  # type: ignore[union-attr]
    assert pick_best(e, 0.3, "min") is None  # a tie keeps the holder
    assert pick_best(e, 0.45, "max").version == "v1.0.0"  # type: ignore[union-attr]
    assert pick_best(history([None, None]), None, "min") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.5), (3, 3.0), (True, None), ("0.1", None), (float("nan"), None), (None, None)],
)
def test_metric_value_takes_finite_numbers_only(value: object, expected: float | None) -> None:
    assert metric_value({"m": value}, "m") == expected


WATCH = '[[watch]]\npath = "/tmp/w"\nartifact = "team/m"\n'


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ('best = { metric = "loss", mode = "avg" }', "best.mode"),
        ('best = { mode = "min" }', "best.metric"),
        ("keep = { last = -1 }", "keep.last"),
        ("keep = { every = 2.5 }", "keep.every"),
        ("keep = { days = -3 }", "keep.days"),
        ("keep = { best = 2 }", "keep.best"),
        ("keep = { lats = 2 }", "keep.lats"),
        ("keep = { explicit = 1 }", "keep.explicit"),
        ('keep = "all"', "keep"),
    ],
)
def test_bad_best_and_keep_name_the_key(extra: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(WATCH + extra + "\n", "/etc/cpv.toml")
    assert f"/etc/cpv.toml: [[watch]] #1 {named}:" in err.value.message


def test_best_and_keep_are_read() -> None:
    cfg = parse_config(
        WATCH + 'best = { metric = "eval_loss", mode = "max" }\n'
        "keep = { last = 3, best = 2, every = 10, days = 0, explicit = false }\n",
        "f",
    )
    w = cfg.watches[0]
    assert w.best is not None and (w.best.metric, w.best.mode) == ("eval_loss", "max")
    assert w.keep == KeepConfig(last=3, best=2, every=10, days=0, explicit=False)
    assert parse_config(WATCH, "f").watches[0].keep is None
