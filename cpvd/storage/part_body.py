"""The one place where the bytes of a multipart upload are read: one part of an open file,
handed to botocore as the request body.

Reads use ``os.pread`` on a descriptor shared by the parts (no shared file position), and
each read is progress: botocore reads as the socket accepts bytes, so the time of the last
read says how long a part has made no progress (a stall, cpvd.storage.multipart). A rate
cap or a cancellation hooks in here, before bytes go out.

botocore may read the body once to compute its checksum before sending it: like s3transfer's
``ReadFileChunk``, progress is reported only once the request is on its way
(:meth:`signal_transferring`, from botocore's ``request-created`` event).
"""

from __future__ import annotations

import os
import threading
import time

from cpvd.storage.base import Progress


class PartBody:
    def __init__(self, fd: int, offset: int, length: int, progress: Progress | None) -> None:
        self._fd = fd
        self._offset = offset
        self._length = length
        self._pos = 0
        self._progress = progress
        self._transferring = False
        self._lock = threading.Lock()
        #: bytes of this part reported as sent (taken back if the attempt fails)
        self.sent = 0
        #: monotonic time of the last read (or of the start)
        self.last_read = time.monotonic()
        #: an exception raised by ``progress`` (a cancellation), kept so the caller can tell
        #: it from the network error botocore wraps it in
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        return self._length

    def signal_transferring(self) -> None:
        self._transferring = True

    def signal_not_transferring(self) -> None:
        self._transferring = False

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            left = self._length - self._pos
            n = left if n is None or n < 0 else min(n, left)
            data = os.pread(self._fd, n, self._offset + self._pos) if n > 0 else b""
            self._pos += len(data)
            self.last_read = time.monotonic()
        if data and self._transferring and self._progress is not None:
            try:
                self._progress(len(data))
            except BaseException as exc:
                self.failure = exc
                raise
            self.sent += len(data)
        return data

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        with self._lock:
            base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
            self._pos = max(0, min(self._length, base + pos))
            return self._pos

    def tell(self) -> int:
        return self._pos

    def idle_for(self) -> float:
        """Seconds since this part last made progress."""
        return time.monotonic() - self.last_read

    def close(self) -> None:
        """botocore closes bodies it is done with; the descriptor belongs to the upload."""
