"""The daemon's configuration model (dataclasses) and its defaults.

Loading and validation of TOML lives in ``cpvd.config.load``; this module only holds the
shape so every other module can depend on it without pulling in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cpvd.config import paths
from cpvd.config.lifecycle import BestConfig, KeepConfig
from cpvd.hooks.model import HookConfig

DEFAULT_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class DaemonConfig:
    socket: Path = field(default_factory=paths.default_socket)
    state_dir: Path = field(default_factory=paths.default_state_dir)
    #: extra uids allowed to talk to the API (the daemon's own uid and root always are)
    allow_uids: tuple[int, ...] = ()
    #: a group whose members may talk to the API (e.g. "cpv")
    allow_group: str | None = None
    #: seconds between full rescans of every watch
    rescan_seconds: float = 30.0
    #: bound on snapshot space in bytes (0 = unbounded)
    snapshot_limit_bytes: int = 0
    #: seconds to finish the running step on SIGTERM before cancelling it
    drain_timeout: float = 20.0
    #: longest wait, in seconds, between two retries of a job or a push (backoff cap)
    retry_max_seconds: float = 300.0
    #: nice value (0-19) of the threads that hash, copy, upload and run Git, so a trainer
    #: on the same cores goes first (cpvd.pipeline.priority); 0 leaves them alone
    nice: int = 10


@dataclass(frozen=True)
class RegistryConfig:
    path: Path = field(default_factory=paths.default_registry)
    remote: str | None = None
    ssh_key: Path | None = None
    #: the profile's name (``[[registry]] name``, named by a watch's ``registry``)
    name: str = "default"
    #: the ``[[storage]]`` profile holding this registry's objects (``[[registry]]`` only)
    storage: str | None = None


@dataclass(frozen=True)
class StorageConfig:
    #: "s3://bucket/prefix" or an absolute local directory
    url: str = field(default_factory=lambda: str(paths.default_storage()))
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    #: multipart part size and concurrency for S3 uploads (8 MiB x 10 threads was the fastest
    #: on a 2-core machine against moto: FIELD-NOTES and benchmarks/profile_transfer.py)
    part_size_mb: int = 8
    concurrency: int = 10
    #: per-request timeouts and attempts (within one operation) for S3 calls
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 6
    #: a multipart part that makes no progress this long is cut off and sent again
    #: (event ``upload.stalled``); also bounds the socket timeouts of part uploads
    stall_seconds: float = 60.0
    #: sign every uploaded byte with SHA-256 (SigV4 payload signing). Over https boto3 never
    #: does for streamed uploads (TLS and the CRC32 checksum S3 verifies cover them); over a
    #: plain-http endpoint it would, at ~0.7 s of CPU per GiB on a 2-core machine, which
    #: slowed uploads to a local S3 by ~15%. Set true to keep it on such an endpoint.
    sign_payload: bool = False
    #: the profile's name (``[[storage]] name``, named by a registry's ``storage``)
    name: str = "default"
    #: bytes per second for all uploads of the daemon together (cpvd.storage.rate); the
    #: file says "200MiB", "50MB" or an integer (cpvd.config.rates); None: no cap
    max_upload_rate: int | None = None

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def s3_bucket_prefix(self) -> tuple[str, str]:
        """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
        rest = self.url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        return bucket, prefix.strip("/")


@dataclass(frozen=True)
class RetentionConfig:
    #: gc deletes an unreferenced object only once it is this old (its storage mtime)
    grace_hours: float = 24.0
    #: hours between two gc runs by the daemon itself; 0 = never (run ``cpvctl gc``)
    gc_interval: float = 0.0


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    artifact: str
    kind: str = "model"  # "model" | "data"
    data: tuple[str, ...] = ()
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    poll: bool = False
    #: what becomes a version (cpvd.watch.units): "auto" | "entries"; None = by kind
    layout: str | None = None
    #: globs relative to ``path`` ("dir/" marks directory units); exclude wins
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: move the stage "best" by this metric (cpvd.config.lifecycle); None: never
    best: BestConfig | None = None
    #: retention: which versions stay registered; None: every version is kept
    keep: KeepConfig | None = None
    #: 0 = never delete the trainer's files; N = delete local checkpoints beyond the N newest
    #: once they are versioned and pushed (cpvd.lifecycle.local_space)
    keep_local: int = 0
    #: the ``[[registry]]`` this watch versions into (None: the only one)
    registry: str | None = None
    #: skip waiting checkpoints that newer ones of the artifact supersede (cpvd.pipeline.coalesce)
    coalesce: bool = False

    @property
    def unit_layout(self) -> str:
        """``layout``, or the kind's default: checkpoint files and trainer directories at any
        depth for a model, each top-level entry (a split, a shard directory) for data."""
        return self.layout or ("entries" if self.kind == "data" else "auto")


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    watches: tuple[WatchConfig, ...] = ()
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    #: ``[[hook]]`` entries (cpvd.hooks): programs and webhooks that act on events
    hooks: tuple[HookConfig, ...] = ()
    #: the file this was loaded from (None: embedded defaults / flags)
    source: Path | None = None
    #: ``[[registry]]``/``[[storage]]`` profiles (cpvd.config.profiles); empty: the single
    #: ``[registry]``/``[storage]`` tables above are the only registry
    registries: tuple[RegistryConfig, ...] = ()
    storages: tuple[StorageConfig, ...] = ()

    def artifact_kinds(self) -> dict[str, str]:
        """Every artifact the config names, with its kind (lineage data artifacts included)."""
        kinds: dict[str, str] = {}
        for w in self.watches:
            for d in w.data:
                kinds.setdefault(d, "data")
        for w in self.watches:
            kinds[w.artifact] = w.kind
        return kinds

    def watch_for(self, artifact: str) -> WatchConfig | None:
        for w in self.watches:
            if w.artifact == artifact:
                return w
        return None
