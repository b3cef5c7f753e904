"""A transfer progress display: a redrawn bar on a terminal, sparse plain lines elsewhere.

Logs and CI capture stderr without a terminal; a carriage-return bar there becomes one huge
line, so off a TTY the same numbers are printed as a plain line every 10% (or every 5 s when the
total is unknown). Always on stderr, so ``--json`` output on stdout stays parseable.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from cpvctl.render import human_duration, human_size

_REDRAW_INTERVAL = 0.1
_PLAIN_INTERVAL = 5.0


def format_progress(label: str, done: int, total: int | None, elapsed: float) -> str:
    """``label  45%  12.0 MiB / 27.0 MiB  5.1 MiB/s  ETA 3s`` (pure, for tests and both modes)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [label]
    if total:
        parts.append(f"{min(100, done * 100 // total):3d}%")
        parts.append(f"{human_size(done)} / {human_size(total)}")
    else:
        parts.append(human_size(done))
    parts.append(f"{human_size(int(rate))}/s" if rate else "-/s")
    if total and rate and done < total:
        parts.append(f"ETA {human_duration((total - done) / rate)}")
    elif total and done >= total:
        parts.append(f"in {human_duration(elapsed)}")
    return "  ".join(parts)


class Progress:
    """Feed it ``update(done, total)``; call ``finish()`` once at the end."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.total: int | None = None
        self._last_draw = -1e9
        self._last_step = -1
        self._drawn = False
        self._finished = False

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total:
            self.total = total
        now = self.clock()
        if self.tty:
            if now - self._last_draw >= _REDRAW_INTERVAL:
                self._draw(now)
        elif self.total:
            step = min(10, done * 10 // self.total)
            if step > self._last_step and step < 10:
                self._last_step = step
                self._line(now)
        elif now - self._last_draw >= _PLAIN_INTERVAL:
            self._line(now)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        now = self.clock()
        if self.tty:
            if self._drawn:
                self._draw(now)
                self.stream.write("\n")
                self.stream.flush()
        elif self._last_step >= 0 or self.done:
            self._line(now)

    def _draw(self, now: float) -> None:
        text = format_progress(self.label, self.done, self.total, now - self.start)
        width = shutil.get_terminal_size((80, 24)).columns
        bar_width = width - len(text) - 4
        if self.total and bar_width >= 10:
            bar_width = min(bar_width, 40)
            filled = min(bar_width, self.done * bar_width // self.total)
            text = f"{text}  [{'#' * filled}{'.' * (bar_width - filled)}]"
        self.stream.write("\r" + text[: width - 1].ljust(width - 1))
        self.stream.flush()
        self._last_draw = now
        self._drawn = True

    def _line(self, now: float) -> None:
        self.stream.write(format_progress(self.label, self.done, self.total, now - self.start))
        self.stream.write("\n")
        self.stream.flush()
        self._last_draw = now
