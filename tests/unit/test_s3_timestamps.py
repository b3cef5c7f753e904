"""cpvd's fast timestamp parser gives exactly what botocore's own parser gives."""

from __future__ import annotations

import datetime

import pytest
from botocore.utils import parse_timestamp

from cpvd.config.model import StorageConfig
from cpvd.storage.s3 import s3_client
from cpvd.storage.s3_timestamps import fast_timestamp

SAMPLES = [
    "2026-12-03T15:54:33.000Z",  # what ListObjectsV2 sends
    "2026-12-03T15:54:33Z",
    "2026-12-03T15:54:33.123456Z",
    "2026-12-03T15:54:33.5+02:00",
    "2026-12-03T15:54:33",  # no zone: botocore's parser decides
    "Wed, 12 Oct 2009 17:50:00 GMT",  # an HTTP date (Last-Modified header)
    "1700000000",
    1700000000,
    1700000000.25,
]


@pytest.mark.parametrize("value", SAMPLES)
def test_same_datetime_as_botocore(value: object) -> None:
    ours, theirs = fast_timestamp(value), parse_timestamp(value)
    assert ours == theirs
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)
    if ours.tzinfo is not None:
        assert ours.utcoffset() == theirs.utcoffset()


def test_garbage_is_botocore_s_error() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("2026-13-45T99:99:99.000Z")
    with pytest.raises(ValueError):
        fast_timestamp("2026-13-45T99:99:99.000Z")


def test_cpvd_s_clients_parse_with_it() -> None:
    """The parser is what s3_client's clients use (not only a function lying around)."""
    cfg = StorageConfig(url="s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")
    client = s3_client(cfg, connect_timeout=1, read_timeout=1)
    parser = client._endpoint._response_parser_factory  # botocore keeps it here
    assert parser._defaults["timestamp_parser"] is fast_timestamp
    assert isinstance(fast_timestamp("2026-12-03T15:54:33.000Z"), datetime.datetime)
