"""boto3/botocore failures as one StorageError, and which of them waiting cannot cure.

Three kinds, because the job does something different for each (``cpvd.pipeline.worker``):

- an **outage** (unreachable endpoint, timeouts, 5xx, throttling): retried for as long as
  it lasts;
- a **permanent** refusal (access denied, no such bucket, unknown key id, a bad signature,
  a quota, any other 4xx): retrying the same request gets the same answer, so the job ends
  ``failed`` after at most two attempts, with the reason, instead of retrying for hours
  unnoticed (huggingface_hub#3325);
- anything else: retried a few times.
"""

from __future__ import annotations

import botocore.exceptions

from cpvd.config.model import StorageConfig
from cpvd.errors import StorageError
from cpvd.redact import mask_url

_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden"}
_THROTTLED = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "503",
    "TooManyRequests", "RequestLimitExceeded", "RequestThrottled", "ServiceUnavailable",
}  # fmt: skip
_REDIRECT = {"301", "PermanentRedirect"}
_REJECTED = {"400", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"}
#: 4xx statuses that are about time or rate, not about the request: waiting cures them
_TRANSIENT_4XX = {408, 429}


def is_permanent(code: str, status: int) -> bool:
    """Whether S3's answer (error ``code``, HTTP ``status``) will be the same on a retry:
    every 4xx except throttling and timeouts (and a redirect, which names a wrong region)."""
    if code in _THROTTLED or status in _TRANSIENT_4XX:
        return False
    if code in _REDIRECT or status in (301, 307):
        return True
    return 400 <= status < 500 or code in _MISSING_BUCKET | _DENIED | _REJECTED


def location(cfg: StorageConfig) -> str:
    """``s3://bucket/prefix at ENDPOINT`` for messages, credentials in the endpoint masked."""
    bucket, prefix = cfg.s3_bucket_prefix()
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return mask_url(f"{url} at {cfg.endpoint_url}" if cfg.endpoint_url else url)


def s3_error(exc: BaseException, cfg: StorageConfig, doing: str) -> StorageError:
    """Any boto3/botocore failure as one StorageError: a sentence saying what went wrong
    where, naming the ``[storage]`` key to fix, ``outage`` when retrying later can help,
    ``permanent`` when it cannot.

    The one translation for the daemon's storage and ``cpvd check`` (which shows
    ``.message``). ``doing`` is the operation ("check", "upload", ...); during "check" a
    404 means the bucket, elsewhere a missing key is the caller's business.
    """
    where = location(cfg)
    client_err = find_client_error(exc)
    if client_err is not None:
        return _client_error(client_err, cfg, doing, where)
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return StorageError(
            f"AWS profile {cfg.profile!r} not found in ~/.aws/config or ~/.aws/credentials; "
            "fix [storage] profile",
            permanent=True,
        )
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StorageError(
            f"no AWS credentials found for {where}: set [storage] profile, or "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the daemon's environment, "
            "or use an instance role",
            permanent=True,
        )
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ConnectionClosedError,
    ):
        endpoint = mask_url(cfg.endpoint_url or "AWS S3")
        return StorageError(
            f"S3 endpoint unreachable: {endpoint} (trying to {doing} on {where}: "
            f"{mask_url(str(exc))}); check [storage] endpoint_url and the network",
            outage=True,
        )
    # the rest of botocore's own errors are network-level (read timeouts, resets, ...);
    # a ValueError comes from a malformed endpoint or region
    network = find_botocore_error(exc)
    return StorageError(
        f"S3 {doing} failed on {where}: {mask_url(str(exc))}; "
        "check [storage] endpoint_url and [storage] region",
        outage=network is not None,
    )


def error_code(err: botocore.exceptions.ClientError) -> tuple[str, int]:
    """S3's error code and HTTP status of a ClientError."""
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _client_error(
    err: botocore.exceptions.ClientError, cfg: StorageConfig, doing: str, where: str
) -> StorageError:
    """What S3 answered, as a sentence; ``outage`` for 5xx and throttling, ``permanent``
    for the 4xx a retry cannot change."""
    code, status = error_code(err)
    msg = str(err.response.get("Error", {}).get("Message", "")) or code
    permanent = is_permanent(code, status)
    bucket, _ = cfg.s3_bucket_prefix()
    if code == "NoSuchBucket" or (doing == "check" and (code in _MISSING_BUCKET or status == 404)):
        return StorageError(
            f"S3 bucket {bucket!r} does not exist at {where}; create it or fix [storage] url",
            permanent=True,
        )
    if code in _REDIRECT or status in (301, 307):
        return StorageError(
            f"S3 bucket {bucket!r} is in another region; set [storage] region", permanent=True
        )
    if code in _DENIED or status == 403:
        return StorageError(
            f"S3 access denied while trying to {doing} on {where} ({code or status}: {msg}); "
            "check the credentials of [storage] profile (or the AWS_* environment) and the "
            "bucket policy",
            permanent=permanent,
        )
    if code in _REJECTED or status == 400:
        return StorageError(
            f"S3 rejected the request to {doing} on {where} ({code or status}: {msg}); check "
            "the credentials of [storage] profile and [storage] region",
            permanent=permanent,
        )
    return StorageError(
        f"S3 {doing} failed on {where}: {code or status}: {msg}",
        outage=status >= 500 or code in _THROTTLED,
        permanent=permanent,
    )


def find_client_error(exc: BaseException) -> botocore.exceptions.ClientError | None:
    """boto3's transfer layer wraps ClientError (S3UploadFailedError); dig it out."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, botocore.exceptions.ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def find_botocore_error(exc: BaseException) -> botocore.exceptions.BotoCoreError | None:
    """A botocore network error behind ``exc`` (boto3's transfer layer wraps them)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, botocore.exceptions.BotoCoreError) and not isinstance(
            seen, botocore.exceptions.NoCredentialsError | botocore.exceptions.ParamValidationError
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


