"""Playwright driving Debian's ``chromium`` (Playwright's own browser downloads are not
reachable here). Every test in this folder skips, saying why, when either is missing."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import daemon_factory  # noqa: F401  (the real daemon fixture)

CHROMIUM = os.environ.get("CPV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; it is in the test extra)"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install -y chromium, or set CPV_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``shot(page, name)`` writes ``<tmp>/screenshots/<name>.png`` and returns its path."""
    folder = tmp_path / "screenshots"
    folder.mkdir()

    def shot(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """The shared leak check, minus the default-executor thread of Playwright's own event
    loop (``asyncio_N``), which lives as long as the module's browser does."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon and not t.name.startswith("asyncio_")
    ]
    for t in leaked:
        t.join(timeout=5)
    assert not [t for t in leaked if t.is_alive()], f"threads leaked: {leaked}"
