"""An upload we stop on purpose is not a network error: no retry.

Why: an early upload that nobody needs any more (its job was superseded or skipped) is
stopped by raising from its progress callback (cpvd.pipeline.file_upload). botocore wraps
any exception raised while sending in ``HTTPClientError``, which its retry policy counts as
transient, so the part was re-sent up to ``max_attempts`` times with backoff (tens of
seconds), holding the early-upload thread and, under ``max_upload_rate``, the bandwidth that
the next job waited for. A ``needs-retry`` handler registered first says "no retry" when the
cause is one of cpvd's own errors.
"""

from __future__ import annotations

from typing import Any

from cpvd.errors import CpvError


def _ours(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or wraps, an error cpvd raised itself (never transient)."""
    for _ in range(6):
        if exc is None:
            return False
        if isinstance(exc, CpvError):
            return True
        inner = getattr(exc, "kwargs", {}).get("error")  # botocore's HTTPClientError(error=)
        exc = inner if isinstance(inner, BaseException) else exc.__cause__ or exc.__context__
    return False


def no_retry_when_cancelled(client: Any) -> None:
    """Register on ``client`` (a botocore S3 client) before its retry handler."""

    def check(caught_exception: BaseException | None = None, **_: Any) -> bool | None:
        return False if _ours(caught_exception) else None

    client.meta.events.register_first("needs-retry.s3", check)
