"""A multipart upload we drive ourselves, so that it survives a crash and a stalled link.

Why not boto3's ``upload_file``: it cannot resume. Here the upload id, key, object size and
part size are journalled (cpvd.storage.journal) before the first part; after a ``kill -9``
(or an outage that outlasted the retries) the next upload of the same object lists the parts
S3 holds (``ListParts``), checks them against the local bytes, sends only the others and
completes the upload: an ``upload.resumed`` event says how much it spared and how much it
sends again. An upload that cannot be resumed (S3 no longer knows the id) starts over.

Parts go up on ``concurrency`` threads through a client whose socket timeouts are at most
``[storage] stall_seconds``: a part that makes no progress for that long has its connection
closed by the timeout, an ``upload.stalled`` event is published and the part alone is sent
again on a new connection. A permanent refusal or a cancellation aborts the upload; an
outage keeps it journalled for the next attempt to resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from cpvd.errors import StorageError
from cpvd.retry import Backoff
from cpvd.storage.base import Progress
from cpvd.storage.journal import UploadJournal
from cpvd.storage.part_body import PartBody
from cpvd.storage.parts import Part, completed_part, confirmed, plan, resume_report
from cpvd.storage.s3_errors import error_code, find_client_error
from cpvd.storage.transfer_events import TransferEvents

#: an interrupted upload is resumed if a part of it began this recently (else aborted)
RESUME_WINDOW = 24 * 3600.0
#: waits between two tries of one part
PART_BACKOFF = Backoff(base=0.5, cap=5.0)
_CHUNK = 8 * 1024 * 1024
_BOTO_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class UploadGone(Exception):
    """S3 no longer knows the upload id (aborted elsewhere, expired): start over."""


@dataclass
class Uploader:
    """What every multipart upload of one storage shares."""

    client: Any  # completes, lists and aborts (its read timeout fits a slow completion)
    parts_client: Any  # sends parts: socket timeouts bounded by ``stall_seconds``
    bucket: str
    journal: UploadJournal | None
    events: TransferEvents
    error: Callable[[BaseException, str], StorageError]
    concurrency: int
    #: a part idle this long has its connection cut by the parts client's socket timeouts
    stall_seconds: float
    part_attempts: int

    def upload(self, md5: str, key: str, fd: int, size: int, part_size: int,
               progress: Progress | None) -> None:  # fmt: skip
        """Store the ``size`` bytes of ``fd`` at ``key``, resuming an interrupted upload."""
        run = _Run(self, md5, key, fd, size, part_size, progress)
        try:
            run.go()
        except UploadGone:
            run._report(-run.reported)  # counted again by the new upload
            run = _Run(self, md5, key, fd, size, part_size, progress)
            run.go(resume=False)

    def abort(self, key: str, upload_id: str) -> None:
        """Abort, best effort (the journal or the next start-up sweep retries)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except _BOTO_ERRORS as exc:
            code, _ = error_code(exc) if isinstance(exc, botocore.exceptions.ClientError) \
                else ("", 0)  # fmt: skip
            if code not in ("NoSuchUpload", "404"):
                return  # stays journalled: aborted at the next start
        if self.journal is not None:
            self.journal.ended(upload_id)


class _Run:
    """One attempt at one object's multipart upload."""

    def __init__(self, up: Uploader, md5: str, key: str, fd: int, size: int, part_size: int,
                 progress: Progress | None) -> None:  # fmt: skip
        self.up, self.md5, self.key, self.fd = up, md5, key, fd
        self.size, self.part_size, self.progress = size, part_size, progress
        self.parts = plan(size, part_size)
        self.upload_id = ""
        self.stop = threading.Event()
        self._retrying: set[int] = set()  # parts retrying: no new part starts meanwhile
        self._calm = threading.Condition()
        self.reported = 0
        self._lock = threading.Lock()  # progress comes from every part's thread

    def go(self, resume: bool = True) -> None:
        done = self._resume() if resume else None
        if done is None:
            done = {}
            self.upload_id = self._create()
        try:
            self._report(len_of(self.parts, done))
            done.update(self._send([p for p in self.parts if p.number not in done]))
            _forget_cached(self.fd, 0, 0)  # to the end of the file
            self._complete(done)
        except BaseException as exc:
            self._after_failure(exc)
            raise
        if self.up.journal is not None:
            self.up.journal.ended(self.upload_id)

    # -- start ---------------------------------------------------------------------------

    def _create(self) -> str:
        try:
            answer = self.up.client.create_multipart_upload(
                Bucket=self.up.bucket, Key=self.key, ChecksumAlgorithm="CRC32"
            )
        except _BOTO_ERRORS as exc:
            raise self.up.error(exc, "upload") from None
        upload_id = str(answer["UploadId"])
        if self.up.journal is not None:
            self.up.journal.started(self.up.bucket, self.key, upload_id, self.size, self.part_size)
        return upload_id

    def _resume(self) -> dict[int, dict[str, Any]] | None:
        """The parts an interrupted upload of this object already holds, or None."""
        journal = self.up.journal
        if journal is None:
            return None
        rec = journal.claim(self.up.bucket, self.key, self.size, self.part_size, RESUME_WINDOW)
        if rec is None:
            return None
        self.upload_id = rec.upload_id
        try:
            listed = self._list_parts()
        except UploadGone:
            journal.ended(rec.upload_id)
            return None
        except BaseException:
            journal.release(rec.upload_id)
            raise
        done = confirmed(self.parts, listed, self._md5_of)
        report = resume_report(self.parts, done, journal.parts_started(rec.upload_id))
        self.up.events.publish(
            "upload.resumed", md5=self.md5, key=self.key, size=self.size,
            part_size=self.part_size, parts=len(self.parts), **vars(report),
        )  # fmt: skip
        return done

    def _list_parts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            pages = self.up.client.get_paginator("list_parts").paginate(
                Bucket=self.up.bucket, Key=self.key, UploadId=self.upload_id
            )
            for page in pages:
                out.extend(page.get("Parts", []))
        except _BOTO_ERRORS as exc:
            if _no_such_upload(exc):
                raise UploadGone(self.upload_id) from None
            raise self.up.error(exc, "resume an upload") from None
        return out

    def _md5_of(self, part: Part) -> str:
        h = hashlib.md5()
        for start in range(part.offset, part.offset + part.length, _CHUNK):
            h.update(os.pread(self.fd, min(_CHUNK, part.offset + part.length - start), start))
        return h.hexdigest()

    # -- parts ---------------------------------------------------------------------------

    def _send(self, todo: list[Part]) -> dict[int, dict[str, Any]]:
        if not todo:
            return {}
        workers = max(1, min(self.up.concurrency, len(todo)))
        with ThreadPoolExecutor(workers, thread_name_prefix="cpv-part") as pool:
            futures: list[Future[dict[str, Any]]] = [pool.submit(self._part, p) for p in todo]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = sorted(
                (f for f in finished if f.exception() is not None),
                key=lambda f: isinstance(f.exception(), _Stopped),
            )
            if failed:
                self.stop.set()  # the others stop at their next read
                for f in futures:
                    f.cancel()
                wait(futures)
                raise failed[0].exception()  # type: ignore[misc]
        return {f.result()["PartNumber"]: f.result() for f in futures}

    def _part(self, part: Part) -> dict[str, Any]:
        try:
            return self._try_part(part)
        except BaseException:
            self.stop.set()  # no part starts once one failed for good
            raise
        finally:
            self._trouble(part.number, False)  # after the stop: a waiting part sees it

    def _try_part(self, part: Part) -> dict[str, Any]:
        self._wait_calm()
        if self.stop.is_set():
            raise _Stopped("another part failed")
        if self.up.journal is not None:
            self.up.journal.part_started(self.upload_id, part.number)
        attempt = 0
        while True:
            attempt += 1
            body = PartBody(self.fd, part.offset, part.length, self._part_progress)
            try:
                answer = self.up.parts_client.upload_part(
                    Bucket=self.up.bucket, Key=self.key, UploadId=self.upload_id,
                    PartNumber=part.number, Body=body, ContentLength=part.length,
                    ChecksumAlgorithm="CRC32",
                )  # fmt: skip
                _forget_cached(self.fd, part.offset, part.length)
                return completed_part(part.number, answer)
            except _BOTO_ERRORS as exc:
                self._report(-body.sent)
                if body.failure is not None:
                    raise body.failure from None
                self._trouble(part.number, True)
                self._retry_or_raise(exc, part, body, attempt)

    def _trouble(self, number: int, retrying: bool) -> None:
        """Mark a part as retrying after a failure, or as done with it."""
        with self._calm:
            if retrying:
                self._retrying.add(number)
            elif number in self._retrying:
                self._retrying.discard(number)
                self._calm.notify_all()

    def _wait_calm(self) -> None:
        """While a part retries after a failure, start no other: on a link that went down,
        every new part would only add bytes to send again (a resume re-sends at most the
        parts that were in flight)."""
        with self._calm:
            while self._retrying and not self.stop.is_set():
                self._calm.wait(0.2)

    def _part_progress(self, n: int) -> None:
        if self.stop.is_set():
            raise _Stopped("another part failed")
        self._report(n)

    def _retry_or_raise(self, exc: BaseException, part: Part, body: PartBody, attempt: int) -> None:
        if _no_such_upload(exc):
            raise UploadGone(self.upload_id) from None
        err = self.up.error(exc, "upload")
        idle = body.idle_for()
        if err.outage and idle >= self.up.stall_seconds * 0.9:
            self.up.events.publish(
                "upload.stalled", md5=self.md5, key=self.key, part=part.number,
                seconds=round(idle, 1), part_bytes_sent=body.tell(), attempt=attempt,
            )  # fmt: skip
        if not err.outage or attempt >= self.up.part_attempts or self.stop.is_set():
            raise err from None
        time.sleep(PART_BACKOFF.delay(attempt))

    # -- end -----------------------------------------------------------------------------

    def _complete(self, done: dict[int, dict[str, Any]]) -> None:
        listed = [done[n] for n in sorted(done)]
        try:
            self.up.client.complete_multipart_upload(
                Bucket=self.up.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": listed},
            )  # fmt: skip
        except _BOTO_ERRORS as exc:
            if _no_such_upload(exc):
                raise UploadGone(self.upload_id) from None
            raise self.up.error(exc, "complete an upload") from None

    def _after_failure(self, exc: BaseException) -> None:
        """An outage keeps the upload for a resume; anything else aborts it."""
        if not self.upload_id:
            return
        if isinstance(exc, StorageError) and exc.outage and self.up.journal is not None:
            self.up.journal.release(self.upload_id)
        elif not isinstance(exc, UploadGone):
            self.up.abort(self.key, self.upload_id)
        elif self.up.journal is not None:
            self.up.journal.ended(self.upload_id)

    def _report(self, n: int) -> None:
        if n and self.progress is not None:
            with self._lock:
                self.reported += n
                self.progress(n)


class _Stopped(Exception):
    """Raised in a part's read once another part failed: stop sending it."""


def _forget_cached(fd: int, offset: int, length: int) -> None:
    """Drop sent bytes from the page cache: the file is cpvd's own snapshot copy, read once
    for the upload, and its GiBs would otherwise push out what the trainer reads (its
    dataset). A resume reads a part from disk again. Best effort, Linux only: pages that
    readahead brings back meanwhile go with the whole-file drop once the upload is done."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def len_of(parts: list[Part], done: dict[int, Any]) -> int:
    return sum(p.length for p in parts if p.number in done)


def _no_such_upload(exc: BaseException) -> bool:
    err = find_client_error(exc)
    return err is not None and error_code(err)[0] in ("NoSuchUpload",)
