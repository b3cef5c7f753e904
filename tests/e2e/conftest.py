from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DaemonProcess


@pytest.fixture
def daemon_factory(short_tmp: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Make DaemonProcess objects under short_tmp; every one still running is stopped."""
    made: list[DaemonProcess] = []

    def make(*, name: str = "d", **kw: Any) -> DaemonProcess:
        d = DaemonProcess(root=short_tmp / name, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None:
            d.kill()
