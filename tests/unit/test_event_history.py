"""``GET /v1/events/recent``'s selection and query checks, and ``--since`` parsing."""

from __future__ import annotations

import pytest

from cpvctl.protocol import ProtocolError
from cpvctl.since import parse_duration, parse_since
from cpvd.api.events import EventBus
from cpvd.api.history import DEFAULT_COUNT, history_answer, select


def _bus(n: int) -> EventBus:
    bus = EventBus(history=100)
    for i in range(n):
        bus.publish("queued", n=i)
    return bus


def test_default_is_the_newest_few_oldest_first() -> None:
    answer = history_answer(_bus(30), {})
    ids = [e["id"] for e in answer["events"]]
    assert ids == list(range(30 - DEFAULT_COUNT + 1, 31))
    assert answer["last_id"] == 30
    assert answer["events"][0]["type"] == "queued" and "time" in answer["events"][0]


def test_count_and_since() -> None:
    bus = _bus(10)
    events = bus.recent()
    cut = events[6].time
    assert [e.id for e in select(events, None, 3)] == [8, 9, 10]
    assert [e.id for e in select(events, cut, None)] == [e.id for e in events if e.time >= cut]
    assert [e.id for e in select(events, events[-1].time + 1, None)] == []
    assert history_answer(bus, {"count": "2", "types": "queued"})["events"][0]["id"] == 9
    assert history_answer(bus, {"types": "versioned"})["events"] == []


def test_empty_bus_names_last_id_zero() -> None:
    assert history_answer(EventBus(), {}) == {"events": [], "last_id": 0}


@pytest.mark.parametrize(
    ("query", "word"),
    [({"count": "0"}, "count"), ({"count": "x"}, "count"), ({"since": "nan"}, "since"),
     ({"since": "-5"}, "since"), ({"since": "10m"}, "since")],
)
def test_bad_query_names_the_parameter(query: dict[str, str], word: str) -> None:
    with pytest.raises(ProtocolError) as err:
        history_answer(_bus(1), query)
    assert err.value.code == "bad_request" and word in err.value.message


def test_since_forms() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90 and parse_duration("2d") == 172800
    assert parse_duration("10") is None and parse_duration("m") is None
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("2026-03-04T05:06:07+00:00") == 1772600767.0
    with pytest.raises(ValueError, match="ISO time"):
        parse_since("last tuesday")
