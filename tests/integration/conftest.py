"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "local":
        yield str(short_tmp / "storage"), None
    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        yield f"s3://{bucket}/ckpt", endpoint
