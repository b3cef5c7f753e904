"""Storage URLs as the config holds them: ``s3://bucket[/prefix]`` or an absolute directory.

Shared by the config loader and ``cpvd migrate-storage --to``, so a URL given on the command
line compares equal to the same URL read from a config file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cpvd.errors import ConfigError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def check_storage_url(url: str) -> str:
    """Accept ``s3://bucket[/prefix]`` or an absolute local directory (``~`` expanded);
    ValueError saying what is wrong otherwise."""
    shown = json.dumps(url, ensure_ascii=False)
    if url.startswith("s3://"):
        bucket, _, _prefix = url[len("s3://") :].partition("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(
                f"invalid S3 bucket {bucket!r} in {shown}: expected s3://bucket[/prefix] "
                "with a bucket name of 3-63 lowercase letters, digits, '.' and '-'"
            )
        return url.rstrip("/") if _prefix.strip("/") else f"s3://{bucket}"
    if "://" in url:
        raise ValueError(
            f"unsupported storage {shown}: use s3://bucket[/prefix] or an absolute directory"
        )
    path = Path(url).expanduser()
    if not path.is_absolute():
        raise ValueError(f"expected s3://bucket[/prefix] or an absolute directory, got {shown}")
    return str(path)


def normalize_storage_url(url: str, key: str = "[storage] url") -> str:
    """A storage URL as the config holds it; ConfigError naming ``key`` (a flag such as
    ``--to``) when it is not one."""
    try:
        return check_storage_url(url)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
