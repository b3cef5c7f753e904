from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.gc_helpers import GcDaemon, gc_daemons
from tests.e2e.harness import DaemonProcess, daemons_of


@pytest.fixture
def daemon_factory(short_tmp: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Make DaemonProcess objects under short_tmp; every one still running is stopped."""
    yield from daemons_of(DaemonProcess, short_tmp)


@pytest.fixture
def gc_daemon(short_tmp: Path) -> Iterator[Callable[..., GcDaemon]]:
    """Make GcDaemons (a ``[retention]`` table, keep_local) under short_tmp; as daemon_factory."""
    yield from gc_daemons(short_tmp)
