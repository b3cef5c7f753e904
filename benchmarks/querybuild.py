"""Build a registry with thousands of versions in seconds, in the exact format cpvd makes.

Versioning 10,000 checkpoints through the daemon would take far longer than the query it is
meant to measure, so the registry is written directly: cpvd's own ``RegistryRepo.open`` makes the
layout commit (so the daemon finds nothing to change when it starts on it), then one
``git fast-import`` stream adds one commit per version — the pointer file, the message and
trailers ``Engine._commit_version`` writes — and an annotated tag per version whose message
is ``VersionInfo(...).message()``, as ``Engine._tag_version`` makes it.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from cpvd.config.model import RegistryConfig
from cpvd.registry.dvcfiles import Pointer, pointer_file, render_pointer
from cpvd.registry.metadata import VersionInfo, version_tag
from cpvd.registry.repo import BRANCH, RegistryRepo

IDENT = "cpvd <cpvd@bench.invalid>"


def _data(text: str) -> bytes:
    raw = text.encode()
    return b"data %d\n" % len(raw) + raw + b"\n"


def version_name(i: int) -> str:
    """The i-th version cpvd gives an artifact: v1.0.0, v1.1.0, v1.2.0, ..."""
    return f"v1.{i}.0"


def fast_import_stream(artifact: str, n: int, start_epoch: int) -> bytes:
    """The ``git fast-import`` input for ``n`` versions on top of the current branch."""
    rel = pointer_file(artifact)
    out: list[bytes] = []
    parent: str | None = None
    for i in range(n):
        version = version_name(i)
        tag = version_tag(artifact, version)
        md5 = hashlib.md5(f"{artifact}-{i}".encode()).hexdigest()
        size = 1_048_576 + i
        pointer = render_pointer(Pointer(md5=md5, size=size, nfiles=1, is_dir=False))
        job_id = hashlib.sha1(f"job-{artifact}-{i}".encode()).hexdigest()[:32]
        when = start_epoch + i
        name = f"epoch-{i}.pt"
        message = "\n".join(
            [
                f"cpv: {artifact} {version} from {name}",
                "",
                f"Cpv-Job: {job_id}",
                "Cpv-Action: version",
                f"Cpv-Version: {tag}",
                f"Cpv-Current: {tag}",
            ]
        )
        mark = i + 1
        out.append(f"commit refs/heads/{BRANCH}\nmark :{mark}\n".encode())
        out.append(f"committer {IDENT} {when} +0000\n".encode())
        out.append(_data(message))
        if i == 0:
            out.append(f"from refs/heads/{BRANCH}^0\n".encode())
        out.append(f"M 100644 inline {rel}\n".encode())
        out.append(_data(pointer))
        info = VersionInfo(
            artifact=artifact,
            version=version,
            md5=md5,
            size=size,
            nfiles=1,
            is_dir=False,
            name=name,
            source=f"/data/runs/{artifact}/checkpoints/{name}",
            host="bench-host",
            metrics={"loss": round(1.0 / (i + 1), 6), "step": i * 100},
            parent=parent,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            job_id=job_id,
        )
        out.append(f"tag {tag}\nfrom :{mark}\ntagger {IDENT} {when} +0000\n".encode())
        out.append(_data(info.message()))
        parent = version
    out.append(b"done\n")
    return b"".join(out)


def build_query_registry(path: Path, artifact: str, n: int, storage_url: str) -> float:
    """Create (or extend) the registry at ``path`` with ``n`` versions of ``artifact``.

    ``storage_url`` must be what the daemon will be configured with (a local directory), so
    the ``.dvc/config`` written here is the one the daemon expects. Returns the seconds the
    build took.
    """
    t0 = time.perf_counter()
    reg = RegistryRepo(RegistryConfig(path=path), {"url": storage_url})
    reg.open({artifact: "model"})
    stream = fast_import_stream(artifact, n, start_epoch=1_700_000_000)
    subprocess.run(
        ["git", "fast-import", "--quiet", "--done"],
        cwd=path,
        input=stream,
        check=True,
        capture_output=True,
        timeout=600,
    )
    # fast-import moves the branch but not the index or the work tree
    subprocess.run(
        ["git", "reset", "-q", "--hard", BRANCH], cwd=path, check=True, capture_output=True
    )
    return time.perf_counter() - t0
