"""The event bus: fan-out, cross-thread publishing, lag handling, SSE framing."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from cpvd.api.events import LAGGED, Event, EventBus, format_sse


async def test_fan_out_to_two_subscribers_with_filter() -> None:
    bus = EventBus()
    async with bus.subscribe() as everything, bus.subscribe({"versioned"}) as versions:
        assert bus.subscriber_count == 2
        bus.publish("detected", path="/d/a.pt")
        bus.publish("versioned", artifact="a", version="v1.0.0")
        first = await everything.get(timeout=5)
        second = await everything.get(timeout=5)
        only = await versions.get(timeout=5)
    assert first is not None and second is not None and only is not None
    assert (first.type, first.id, first.data) == ("detected", 1, {"path": "/d/a.pt"})
    assert (second.type, second.id) == ("versioned", 2)
    assert only == second
    assert await versions.get(timeout=0.01) is None
    assert bus.subscriber_count == 0  # leaving `async with` unsubscribed both


async def test_publish_from_other_threads_hops_to_the_loop() -> None:
    bus = EventBus()
    bus.attach()
    async with bus.subscribe() as sub:

        def publisher(k: int) -> None:
            for i in range(50):
                bus.publish("progress", worker=k, n=i)

        publishers = [threading.Thread(target=publisher, args=(k,)) for k in range(3)]
        for t in publishers:
            t.start()
        for t in publishers:
            t.join()
        # delivery was scheduled onto the loop, not done in the publishing threads
        assert sub.pending() == 0
        received = [await sub.get(timeout=5) for _ in range(150)]
    events = [e for e in received if e is not None]
    assert len(events) == 150
    assert [e.id for e in events] == list(range(1, 151))
    for k in range(3):  # each thread's events keep their order
        assert [e.data["n"] for e in events if e.data["worker"] == k] == list(range(50))


async def test_slow_subscriber_drops_oldest_with_lagged_notice() -> None:
    bus = EventBus()
    async with bus.subscribe(max_queue=3) as slow, bus.subscribe() as fast:
        for i in range(10):
            bus.publish("progress", n=i)  # never blocks although `slow` reads nothing
        notice = await slow.get(timeout=5)
        assert notice is not None and notice.type == LAGGED
        assert notice.data == {"dropped": 7} and notice.id == 7  # the last event it lost
        rest = [await slow.get(timeout=5) for _ in range(3)]
        assert [e.data["n"] for e in rest if e is not None] == [7, 8, 9]
        assert await slow.get(timeout=0.01) is None
        assert fast.pending() == 10 and fast.dropped_total == 0
    assert slow.dropped_total == 7 and bus.lagged_total == 7


async def test_close_ends_iteration_and_timeout_returns_none() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    assert await sub.get(timeout=0.01) is None
    bus.publish("queued", job_id="x")

    async def consume() -> list[Event]:
        return [event async for event in sub]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    bus.close()
    got = await asyncio.wait_for(task, timeout=5)
    assert [e.type for e in got] == ["queued"]
    assert sub.closed and bus.subscriber_count == 0
    late = bus.subscribe()
    assert late.closed and await late.get(timeout=1) is None


async def test_recent_and_replay_after_id() -> None:
    bus = EventBus(history=3)
    for i in range(5):
        bus.publish("versioned" if i % 2 else "detected", n=i)
    assert [e.id for e in bus.recent()] == [3, 4, 5]
    assert [e.id for e in bus.recent(limit=1)] == [5]
    assert [e.id for e in bus.recent(types={"versioned"})] == [4]
    async with bus.subscribe(after_id=3) as sub:
        replay = [await sub.get(timeout=1) for _ in range(2)]
        assert [e.id for e in replay if e is not None] == [4, 5]
    async with bus.subscribe(after_id=0) as behind:
        notice = await behind.get(timeout=1)
        assert notice is not None and notice.type == LAGGED and notice.data == {"dropped": 2}
        assert [(await behind.get(timeout=1)).id for _ in range(3)] == [3, 4, 5]  # type: ignore[union-attr]


def test_publish_after_loop_closed_keeps_history() -> None:
    bus = EventBus()
    loop = asyncio.new_event_loop()
    bus.attach(loop)
    loop.close()
    t = threading.Thread(target=lambda: bus.publish("failed", error="boom"))
    t.start()
    t.join()
    assert [(e.type, e.data) for e in bus.recent()] == [("failed", {"error": "boom"})]


def test_invalid_event_type() -> None:
    bus = EventBus()
    for bad in ("", "Versioned", "a b", "x\nevent: evil"):
        with pytest.raises(ValueError):
            bus.publish(bad)
    assert bus.recent() == []


def test_format_sse() -> None:
    event = Event(12, "versioned", 1700000000.5, {"note": "two\nlines", "size": 3})
    raw = format_sse(event)
    assert raw.endswith(b"\n\n")
    lines = raw.decode().rstrip("\n").split("\n")
    assert lines[0] == "id: 12" and lines[1] == "event: versioned"
    assert len(lines) == 3 and lines[2].startswith("data: ")
    payload = json.loads(lines[2][len("data: ") :])
    assert payload == {
        "id": 12,
        "type": "versioned",
        "time": 1700000000.5,
        "data": {"note": "two\nlines", "size": 3},
    }
