"""Which storage failures a retry cannot cure: those end a job after two attempts
(cpvd.pipeline.worker.PERMANENT_ATTEMPTS); outages keep retrying."""

from __future__ import annotations

import botocore.exceptions
import pytest

from cpvd.config.model import StorageConfig
from cpvd.errors import StorageError
from cpvd.storage.s3_errors import is_permanent, s3_error

CFG = StorageConfig(url="s3://bucket-x/p", endpoint_url="http://127.0.0.1:9")


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "UploadPart",
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("NoSuchBucket", 404),
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
        ("QuotaExceeded", 403),
        ("EntityTooLarge", 400),
        ("InvalidRequest", 400),
        ("PermanentRedirect", 301),
    ],
)
def test_refusals_are_permanent(code: str, status: int) -> None:
    assert is_permanent(code, status)
    err = s3_error(_client_error(code, status), CFG, "upload")
    assert err.permanent and not err.outage
    assert "upload" in err.message or "bucket" in err.message


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("InternalError", 500),
        ("RequestTimeout", 400),
        ("TooManyRequests", 429),
        ("Throttling", 400),
        ("", 408),
    ],
)
def test_throttling_timeouts_and_5xx_are_not_permanent(code: str, status: int) -> None:
    assert not is_permanent(code, status)
    assert not s3_error(_client_error(code, status), CFG, "upload").permanent


def test_network_failures_are_outages_not_permanent() -> None:
    for exc in (
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"),
    ):
        err = s3_error(exc, CFG, "upload")
        assert err.outage and not err.permanent


def test_an_outage_is_never_permanent() -> None:
    assert not StorageError("x", outage=True, permanent=True).permanent
