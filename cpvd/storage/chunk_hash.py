"""An md5 that can step back: its state is kept at every chunk boundary.

Why: a file is hashed while its writer is still writing it (cpvd.pipeline.follow), so
that at the writer's last byte the md5 is done. Most writers only append, but some seek
back and rewrite earlier bytes (a header patched after the body, torch's zip records).
md5 cannot be un-fed, so the state after each whole chunk is kept (``hashlib``'s
``.copy()``, about 100 bytes each: 128 of them for a GiB in 8 MiB chunks); when a
compare finds the first chunk that differs, the hash resumes from the state before it
instead of starting over.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: bytes between two kept states (the snapshot copy and the compare use the same step)
CHUNK = 8 * 1024 * 1024


class ChunkedMd5:
    """md5 of a byte stream fed front to back, able to :meth:`rewind` to a chunk boundary."""

    def __init__(self, chunk: int = CHUNK) -> None:
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        self.chunk = chunk
        self._h: Any = hashlib.md5()
        #: ``_states[k]``: the md5 state after ``k`` whole chunks
        self._states: list[Any] = [self._h.copy()]
        self.length = 0

    def update(self, data: bytes | memoryview) -> None:
        """Feed the bytes that follow the ``length`` already fed."""
        view = memoryview(data)
        while view:
            room = self.chunk - self.length % self.chunk
            part = view[:room]
            self._h.update(part)
            self.length += len(part)
            view = view[len(part) :]
            if self.length % self.chunk == 0:
                self._states.append(self._h.copy())

    def rewind(self, offset: int) -> int:
        """Forget every byte from ``offset`` on, as far back as the chunk boundary at or
        before it; returns that boundary (where feeding must resume)."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        k = min(offset, self.length) // self.chunk
        del self._states[k + 1 :]
        self._h = self._states[k].copy()
        self.length = k * self.chunk
        return self.length

    def hexdigest(self) -> str:
        return str(self._h.hexdigest())
