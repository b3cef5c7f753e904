"""The API's connection bound (issue 15 #9): who is closed at the cap, and one log line."""

from __future__ import annotations

import logging

import pytest

from cpvd.api.limits import MAX_CONNECTIONS, Connections, connection_cap


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_at_the_cap_the_oldest_idle_connection_makes_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conns = Connections(cap=3)
    handlers = [object() for _ in range(6)]
    transports = [FakeTransport() for _ in handlers]
    for h, t in zip(handlers[:3], transports[:3], strict=True):
        conns.admit(h, t)  # type: ignore[arg-type]
    conns.busy.add(handlers[0])  # serving a request: never closed to make room
    with caplog.at_level(logging.WARNING, logger="cpvd.api.limits"):
        conns.admit(handlers[3], transports[3])  # type: ignore[arg-type]
        assert [t.closed for t in transports[:4]] == [False, True, False, False]
        conns.admit(handlers[4], transports[4])  # type: ignore[arg-type]
        assert transports[2].closed and list(conns.open) == [handlers[0], *handlers[3:5]]
        conns.busy.update(handlers[3:5])
        conns.admit(handlers[5], transports[5])  # all busy: the newcomer is refused
        assert transports[5].closed and handlers[5] not in conns.open
    assert (conns.evicted, conns.refused) == (2, 1)
    assert len([r for r in caplog.records if "connection limit" in r.message]) == 1
    conns.forget(handlers[0])
    assert handlers[0] not in conns.open and handlers[0] not in conns.busy


@pytest.mark.parametrize(
    ("limit", "cap"), [(16, 4), (128, 32), (1024, MAX_CONNECTIONS), (1 << 20, MAX_CONNECTIONS)]
)
def test_connections_get_a_quarter_of_the_descriptors_at_most(limit: int, cap: int) -> None:
    assert connection_cap(limit) == cap
