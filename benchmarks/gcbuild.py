"""A registry and a bucket for the gc benchmark, built in seconds rather than hours.

The registry is written with one ``git fast-import`` stream in cpvd's exact format (one
commit per version moving the pointer, an annotated tag with ``VersionInfo(...).message()``),
plus a GTO deregistration tag ``NAME@vX.Y.Z!#1`` for every pruned version. Every version
is a directory of ``files`` unique files, so it owns ``files + 1`` objects (its ``.dir``
manifest too). The objects go straight into moto's backend in the server's own process
(``benchmarks.moto_child --prefill``): 100,000 PUTs over HTTP would take minutes of setup.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cpvd.config.model import RegistryConfig
from cpvd.registry.dvcfiles import Pointer, pointer_file, render_pointer
from cpvd.registry.metadata import VersionInfo, version_tag
from cpvd.registry.repo import BRANCH, RegistryRepo
from cpvd.storage.base import object_key

IDENT = "cpvd <cpvd@bench.invalid>"


@dataclass(frozen=True)
class GcShape:
    versions: int
    files: int  # per version
    keep_every: int  # version i is kept when i % keep_every == 0, else pruned

    @property
    def objects(self) -> int:
        return self.versions * (self.files + 1)

    def pruned(self, i: int) -> bool:
        """Version ``i`` is deregistered: all but every ``keep_every``-th and the newest."""
        return i % self.keep_every != 0 and i != self.versions - 1

    @property
    def pruned_versions(self) -> int:
        return sum(1 for i in range(self.versions) if self.pruned(i))

    @property
    def pruned_objects(self) -> int:
        return self.pruned_versions * (self.files + 1)


def _data(raw: bytes) -> bytes:
    return b"data %d\n" % len(raw) + raw + b"\n"


def version_objects(artifact: str, i: int, files: int) -> tuple[str, dict[str, bytes]]:
    """The ``.dir`` md5 of version ``i`` and every object it owns (md5 -> bytes)."""
    objs: dict[str, bytes] = {}
    entries = []
    for f in range(files):
        blob = f"{artifact}/{i}/{f}".encode()
        md5 = hashlib.md5(blob).hexdigest()
        objs[md5] = blob
        entries.append({"md5": md5, "relpath": f"shard-{f:02d}.bin"})
    manifest = json.dumps(entries, separators=(", ", ": ")).encode()
    dir_md5 = hashlib.md5(manifest).hexdigest() + ".dir"
    objs[dir_md5] = manifest
    return dir_md5, objs


def write_prefill(path: Path, bucket: str, prefix: str, artifact: str, shape: GcShape) -> None:
    """``bucket\\tkey\\thex bytes`` lines for ``moto_child --prefill``."""
    with open(path, "w") as out:
        for i in range(shape.versions):
            _, objs = version_objects(artifact, i, shape.files)
            for md5, blob in objs.items():
                out.write(f"{bucket}\t{prefix}/{object_key(md5)}\t{blob.hex()}\n")


def fast_import_stream(artifact: str, shape: GcShape, start_epoch: int) -> bytes:
    rel = pointer_file(artifact)
    out: list[bytes] = []
    for i in range(shape.versions):
        version = f"v1.{i}.0"
        tag = version_tag(artifact, version)
        dir_md5, objs = version_objects(artifact, i, shape.files)
        size = sum(len(b) for m, b in objs.items() if not m.endswith(".dir"))
        pointer = Pointer(md5=dir_md5, size=size, nfiles=shape.files, is_dir=True)
        job_id = hashlib.sha1(f"gc-{artifact}-{i}".encode()).hexdigest()[:32]
        when = start_epoch + i
        message = (
            f"cpv: {artifact} {version} from ck-{i}\n\nCpv-Job: {job_id}\n"
            f"Cpv-Action: version\nCpv-Version: {tag}\nCpv-Current: {tag}"
        )
        out.append(f"commit refs/heads/{BRANCH}\nmark :{i + 1}\n".encode())
        out.append(f"committer {IDENT} {when} +0000\n".encode())
        out.append(_data(message.encode()))
        if i == 0:
            out.append(f"from refs/heads/{BRANCH}^0\n".encode())
        out.append(f"M 100644 inline {rel}\n".encode())
        out.append(_data(render_pointer(pointer).encode()))
        info = VersionInfo(
            artifact=artifact, version=version, md5=dir_md5, size=size, nfiles=shape.files,
            is_dir=True, name=f"ck-{i}", source=f"/data/{artifact}/ck-{i}", host="bench-host",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)), job_id=job_id,
        )  # fmt: skip
        out.append(f"tag {tag}\nfrom :{i + 1}\ntagger {IDENT} {when} +0000\n".encode())
        out.append(_data(info.message().encode()))
        if shape.pruned(i):
            out.append(f"tag {tag}!#1\nfrom :{i + 1}\ntagger {IDENT} {when} +0000\n".encode())
            out.append(_data(f"Deregistering {artifact} {version}".encode()))
    out.append(b"done\n")
    return b"".join(out)


def build_gc_registry(
    path: Path, artifact: str, shape: GcShape, storage_url: str, endpoint_url: str | None = None
) -> float:
    """The registry at ``path`` (seconds taken). ``storage_url`` and ``endpoint_url`` are the
    daemon's [storage]: the registry records them and the daemon refuses any other."""
    t0 = time.perf_counter()
    settings = {"url": storage_url} | ({"endpointurl": endpoint_url} if endpoint_url else {})
    reg = RegistryRepo(RegistryConfig(path=path), settings)
    reg.open({artifact: "model"})
    subprocess.run(
        ["git", "fast-import", "--quiet", "--done"],
        cwd=path,
        input=fast_import_stream(artifact, shape, start_epoch=1_700_000_000),
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        ["git", "reset", "-q", "--hard", BRANCH], cwd=path, check=True, capture_output=True
    )
    return time.perf_counter() - t0
