"""One page of versions for the local page: sort keys, order, slicing, fields, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from cpvctl.protocol import ProtocolError
from cpvd.api.version_pages import PageRequest, page, parse_page

ROWS: list[dict[str, Any]] = [  # newest first, as the registry lists them
    {"version": "v1.10.0", "size": 5, "md5": "c", "metrics": {"loss": 0.2}, "stages": []},
    {"version": "v1.9.0", "size": 50, "md5": "a", "metrics": {"loss": "n/a"}, "stages": []},
    {"version": "v1.2.0", "size": 7, "md5": "b", "metrics": {}, "stages": ["best"]},
    {"version": "v1.1.0", "size": 1, "md5": "d", "metrics": {"loss": 0.9}, "stages": []},
]


def versions(rows: list[dict[str, Any]]) -> list[str]:
    return [r["version"] for r in rows]


def test_no_parameters_means_no_paging() -> None:
    assert parse_page(None, None, None, None, None) is None


def test_offset_and_limit_slice_newest_first() -> None:
    req = parse_page("1", "2", None, None, None)
    assert req == PageRequest(offset=1, limit=2)
    assert versions(page(ROWS, req)) == ["v1.9.0", "v1.2.0"]


def test_versions_sort_as_numbers_not_text() -> None:
    req = parse_page(None, None, "version", "asc", None)
    assert req is not None
    assert versions(page(ROWS, req)) == ["v1.1.0", "v1.2.0", "v1.9.0", "v1.10.0"]


def test_size_and_md5_sort() -> None:
    by_size = parse_page(None, None, "size", "desc", None)
    by_md5 = parse_page(None, None, "md5", "asc", None)
    assert by_size is not None and by_md5 is not None
    assert versions(page(ROWS, by_size)) == ["v1.9.0", "v1.2.0", "v1.10.0", "v1.1.0"]
    assert versions(page(ROWS, by_md5)) == ["v1.9.0", "v1.2.0", "v1.10.0", "v1.1.0"]


def test_a_metric_sorts_numbers_above_text_above_missing() -> None:
    req = parse_page("0", "10", "metric:loss", "desc", None)
    assert req is not None
    assert versions(page(ROWS, req)) == ["v1.1.0", "v1.10.0", "v1.9.0", "v1.2.0"]


def test_fields_trim_each_row() -> None:
    req = parse_page(None, "1", None, None, "version,metrics")
    assert req is not None
    assert page(ROWS, req) == [{"version": "v1.10.0", "metrics": {"loss": 0.2}}]


def test_ascending_without_a_sort_key_is_oldest_first() -> None:
    req = parse_page(None, "2", None, "asc", None)
    assert req is not None
    assert versions(page(ROWS, req)) == ["v1.1.0", "v1.2.0"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("-1", None, None, None, None), "offset"),
        ((None, "0", None, None, None), "limit"),
        ((None, "100001", None, None, None), "limit"),
        ((None, None, "__class__", None, None), "sort must be"),
        ((None, None, None, "up", None), "order"),
        ((None, None, None, None, "version,secret"), "unknown field(s) secret"),
    ],
)
def test_bad_parameters_name_what_is_wrong(args: tuple[str | None, ...], words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_page(*args)
    assert words in str(info.value.message if hasattr(info.value, "message") else info.value)
