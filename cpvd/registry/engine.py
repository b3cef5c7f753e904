"""The versioning engine: one checkpoint in, one version out, and the operations on versions.

Every operation is safe to run again after a crash: a version's commit is found by its job
id, its tag is checked before it is made, uploads skip objects already stored. The engine is
synchronous and not thread-safe; the daemon runs it on one worker thread per registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cpvctl.protocol import FIRST_VERSION, Version, validate_name, validate_stage
from cpvd.config.model import Config
from cpvd.errors import CpvError, GitError, InputError, IntegrityError, NotFound
from cpvd.registry.dvcfiles import Pointer, pointer_file
from cpvd.registry.index import RegistryIndex, read_index
from cpvd.registry.metadata import VersionInfo, now_iso, version_tag
from cpvd.registry.repo import PushRejected, RegistryRepo
from cpvd.storage import put_checkpoint
from cpvd.storage.base import Storage
from cpvd.storage.hashing import ContentHash, FileEntry, hash_checkpoint

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
MAX_PUSH_ROUNDS = 20


@dataclass
class VersionRequest:
    artifact: str
    path: Path  # where the bytes are read (a snapshot, or the checkpoint itself)
    source: str | None = None  # where the checkpoint was found (default: path)
    kind: str = "model"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    metrics: dict[str, Any] | None = None
    bump: str = "minor"
    name: str | None = None  # original file/dir name (default: the source's name)
    data: Sequence[str] = ()  # data artifacts to record as lineage


@dataclass
class VersionResult:
    status: str  # "versioned" | "unchanged"
    info: VersionInfo
    content: ContentHash


@dataclass
class Reverted:
    artifact: str
    version: str
    path: str
    backup: str | None = None
    restored: bool = True  # False when the target already held these bytes


@dataclass
class PushReport:
    pushed: int  # commits pushed
    renumbered: list[tuple[str, str]] = field(default_factory=list)  # (old tag, new tag)


@dataclass
class Manifest:
    artifact: str
    version: str
    kind: str  # "file" | "dir"
    name: str
    md5: str
    size: int
    files: list[FileEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "version": self.version,
            "kind": self.kind,
            "name": self.name,
            "md5": self.md5,
            "size": self.size,
            "files": [{"relpath": f.relpath, "md5": f.md5, "size": f.size} for f in self.files],
        }


class Engine:
    def __init__(
        self,
        config: Config,
        storage: Storage,
        registry: RegistryRepo,
        *,
        writable_roots: Sequence[Path] | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.registry = registry
        self.state_dir = Path(config.daemon.state_dir)
        roots = writable_roots if writable_roots is not None else [w.path for w in config.watches]
        self.writable_roots = [Path(os.path.realpath(r)) for r in roots]
        self._index: RegistryIndex | None = None
        self._current: dict[str, str | None] = {}
        self._pointers: dict[str, Pointer | None] = {}
        self._laid_out: set[str] = set()  # artifacts whose dvc.yaml entry is committed
        #: bumped whenever anything a query shows may have changed (answer caches key on it)
        self.generation = 0

    # -- setup ----------------------------------------------------------------------------
    def open(self) -> None:
        self.registry.open(self.config.artifact_kinds())
        self.invalidate()
        self.index()  # read every tag now, so the first query does not pay for it

    def invalidate(self) -> None:
        """Forget everything read from the registry (after fetch, replay, reset, promote)."""
        self._index = None
        self._current.clear()
        self._pointers.clear()
        self._laid_out.clear()
        self.generation += 1

    # -- queries --------------------------------------------------------------------------
    def index(self) -> RegistryIndex:
        if self._index is None:
            self._index = read_index(self.registry.path)
        return self._index

    def current_version(self, artifact: str) -> str | None:
        """The version the artifact's pointer names at HEAD (after a revert: the reverted-to)."""
        if artifact not in self._current:
            self._current[artifact] = self._read_current(artifact)
        return self._current[artifact]

    def _pointer_at_head(self, artifact: str) -> Pointer | None:
        if artifact not in self._pointers:
            self._pointers[artifact] = self.registry.pointer(artifact)
        return self._pointers[artifact]

    def _read_current(self, artifact: str) -> str | None:
        if self.registry.head() is None:
            return None
        return self._version_at(artifact, "HEAD")

    def versions(self, artifact: str) -> list[VersionInfo]:
        validate_name(artifact)
        current = self.current_version(artifact)
        out = []
        for v in self.index().artifact_versions(artifact):
            v.current = v.version == current
            out.append(v)
        return out

    def show(self, artifact: str, version: str | None = None) -> VersionInfo:
        validate_name(artifact)
        if version is None:
            version = self.current_version(artifact)
            if version is None:
                raise NotFound(f"artifact {artifact!r} has no versions yet", "unknown_artifact")
        else:
            version = str(Version.parse(version))
        info = self.index().get(artifact, version)
        if info is None:
            if not self.index().artifact_versions(artifact):
                raise NotFound(f"unknown artifact {artifact!r}", "unknown_artifact")
            raise NotFound(f"{artifact} has no version {version}", "unknown_version")
        info.current = info.version == self.current_version(artifact)
        return info

    def artifacts(self) -> list[dict[str, Any]]:
        kinds = dict(self.config.artifact_kinds())
        index = self.index()
        for name, vs in index.versions.items():
            kinds.setdefault(name, vs[0].kind if vs else "model")
        return [
            {
                "name": name,
                "kind": kind,
                "latest": (index.latest(name).version if index.latest(name) else None),  # type: ignore[union-attr]
                "current": self.current_version(name),
                "count": len(index.artifact_versions(name)),
            }
            for name, kind in sorted(kinds.items())
        ]

    # -- versioning -----------------------------------------------------------------------
    def version(
        self,
        req: VersionRequest,
        progress: Progress | None = None,
        push: bool = True,
        content: ContentHash | None = None,
        resume: bool = True,
        uploaded: bool = False,
    ) -> VersionResult:
        """Make ``req`` a version (or report it unchanged). Idempotent per ``req.job_id``.

        ``resume=False`` tells the engine this job never reached the registry before, which
        skips the search for its commit; ``uploaded`` that the caller already stored the bytes.
        """
        validate_name(req.artifact)
        if req.bump not in ("minor", "major"):
            raise InputError(f"unknown bump {req.bump!r}: use minor or major")
        if content is None:
            content = hash_checkpoint(req.path)
        commit = self.registry.find_job_commit(req.job_id) if resume else None
        if commit is None:
            cur = self.current_version(req.artifact)
            pointer = self._pointer_at_head(req.artifact)
            if pointer is not None and pointer.md5 == content.md5 and cur is not None:
                return VersionResult("unchanged", self.show(req.artifact, cur), content)
            if not uploaded:
                self.upload(req.path, content, progress)
            commit, tag = self._commit_version(req, content)
            # just made: its tag and parent are known, no need to read them back from git
            info = self._tag_version(req, content, commit, made=(tag, cur))
        else:
            info = self._tag_version(req, content, commit)
        if push and self.registry.has_remote:
            self.push()
            info = self.index().find_job(req.job_id) or info
        return VersionResult("versioned", info, content)

    def upload(
        self,
        path: Path,
        content: ContentHash,
        progress: Progress | None = None,
        skip: Collection[str] = (),
    ) -> None:
        """Put every object of a checkpoint into the remote, skipping those already there
        (and the file objects in ``skip``, known to be stored)."""
        put_checkpoint(self.storage, path, content, progress, skip)

    def _next_version(self, artifact: str, bump: str) -> Version:
        taken = {Version.parse(v.version) for v in self.index().artifact_versions(artifact)}
        taken |= {
            Version.parse(t.split("@", 1)[1])
            for t in self.index().tags
            if t.startswith(artifact + "@v") and _is_version(t.split("@", 1)[1])
        }
        if not taken:
            return FIRST_VERSION
        candidate = max(taken).bump(bump)
        while candidate in taken:
            candidate = candidate.bump("minor")
        return candidate

    def _commit_version(self, req: VersionRequest, content: ContentHash) -> tuple[str, str]:
        """Commit the artifact's pointer for a new version; returns (commit, version tag)."""
        version = self._next_version(req.artifact, req.bump)
        if req.artifact not in self._laid_out:
            self.registry.ensure_layout({req.artifact: req.kind}, message="cpv: register artifact")
            self._laid_out.add(req.artifact)
        rel = self.registry.write_pointer(req.artifact, _pointer(content))
        name = req.name or Path(req.source or req.path).name
        tag = version_tag(req.artifact, str(version))
        commit = self.registry.commit(
            [rel],
            f"cpv: {req.artifact} {version} from {name}",
            trailers={
                "Cpv-Job": req.job_id,
                "Cpv-Action": "version",
                "Cpv-Version": tag,
                "Cpv-Current": tag,
            },
        )
        self._current[req.artifact] = str(version)
        self._pointers[req.artifact] = _pointer(content)
        return commit, tag

    def _tag_version(
        self,
        req: VersionRequest,
        content: ContentHash,
        commit: str,
        made: tuple[str, str | None] | None = None,
    ) -> VersionInfo:
        """Tag ``commit``. ``made`` = (tag, parent version) when this process just committed
        it; otherwise (a resumed job) both are read back from git and the tag is checked."""
        if made is not None:
            # a clash with an existing tag still fails: ``git tag`` refuses to overwrite
            tag, parent = made
            target = None
        else:
            existing = self.index().find_job(req.job_id)
            if existing is not None and existing.commit == commit:
                return existing
            trailers = self.registry.trailers(commit)
            tag = trailers.get("Cpv-Version", [""])[0]
            target = self.registry.tag_target(tag) if tag else None
            if not tag or (target is not None and target != commit):
                raise GitError(
                    f"version tag {tag!r} for job {req.job_id} is taken by another commit"
                )
            parent_commit = self.registry.git("rev-parse", f"{commit}^").strip()
            parent = self._version_at(req.artifact, parent_commit)
        _, _, version = tag.rpartition("@")
        lineage = {d: v for d in req.data if (v := self.current_version(d)) is not None}
        info = VersionInfo(
            artifact=req.artifact,
            version=version,
            md5=content.md5,
            size=content.size,
            nfiles=content.nfiles,
            is_dir=content.is_dir,
            name=req.name or Path(req.source or req.path).name,
            source=str(req.source or req.path),
            kind=req.kind,
            metrics=dict(req.metrics or {}),
            lineage=lineage,
            parent=parent,
            job_id=req.job_id,
        )
        if target is None:
            self.registry.create_tag(tag, commit, info.message())
        info.commit = commit
        if self._index is not None and tag not in self._index.tags:
            self._index.add_version(dataclasses.replace(info, stages=[]))
        else:
            self._index = None  # resumed with the tag already there: read it back
        self.generation += 1
        return info

    def _version_at(self, artifact: str, commit: str) -> str | None:
        out = self.registry.git(
            "log", "-n", "1", "--format=%H", commit, "--", pointer_file(artifact)
        ).strip()
        if not out:
            return None
        for value in self.registry.trailers(out).get("Cpv-Current", []):
            name, _, version = value.rpartition("@")
            if name == artifact:
                return version
        return None

    # -- pushing --------------------------------------------------------------------------
    def unpushed(self) -> int:
        if not self.registry.has_remote:
            return 0
        return len(self.registry.unpushed_commits())

    def push(self) -> PushReport:
        """Push everything waiting, in one atomic push; replay on top if another machine won."""
        reg = self.registry
        report = PushReport(pushed=0)
        if not reg.has_remote or reg.head() is None:
            return report
        for _ in range(MAX_PUSH_ROUNDS):
            pending = len(reg.unpushed_commits())
            try:
                reg.push()
            except PushRejected as exc:
                log.info("push rejected, replaying on the remote's history: %s", exc.message)
                report.renumbered += self._replay()
                time.sleep(random.uniform(0.0, 0.2))
                continue
            if reg.fetch():  # other machines' tags came along: re-read them
                self.invalidate()
            report.pushed += pending
            return report
        raise GitError(f"push to {reg.cfg.remote} still rejected after {MAX_PUSH_ROUNDS} rounds")

    def _replay(self) -> list[tuple[str, str]]:
        """Rebuild local unpushed commits on top of the remote branch, renumbering versions.

        Unpushed tags were never seen by anyone else, so deleting and re-making them never
        moves a tag that exists anywhere but here.
        """
        reg = self.registry
        reg.fetch()
        base = reg.remote_branch()
        commits = reg.unpushed_commits()
        if base is None:
            return []
        index = read_index(reg.path)
        by_commit: dict[str, list[VersionInfo]] = {}
        for vs in index.versions.values():
            for v in vs:
                if v.commit:
                    by_commit.setdefault(v.commit, []).append(v)
        plan: list[tuple[dict[str, list[str]], list[VersionInfo]]] = []
        unpushed = set(commits)
        local_tags_to_drop = [t for t, target in index.tags.items() if target in unpushed]
        for c in commits:
            plan.append((reg.trailers(c), by_commit.get(c, [])))
        remote = reg.remote_tags()
        reg.delete_tags(t for t in local_tags_to_drop if remote.get(t) != index.tags.get(t))
        kept = set(index.tags) - set(local_tags_to_drop)
        reg.fetch_tags(t for t in remote if t not in kept)
        reg.reset_hard(base)
        self.invalidate()
        renames: list[tuple[str, str]] = []
        for trailers, infos in plan:
            action = trailers.get("Cpv-Action", [""])[0]
            if action == "version" and infos:
                renames.append(self._replay_version(trailers, infos[0]))
            elif action == "revert":
                self._replay_revert(trailers)
            elif not action:
                reg.ensure_layout(self.config.artifact_kinds(), message="cpv: registry layout")
        return [(a, b) for a, b in renames if a != b]

    def _replay_version(self, trailers: dict[str, list[str]], info: VersionInfo) -> tuple[str, str]:
        old = info.tag
        current = self.current_version(info.artifact)
        pointer = self.registry.pointer(info.artifact)
        req = VersionRequest(
            artifact=info.artifact,
            path=Path(info.source),
            source=info.source,
            kind=info.kind,
            job_id=info.job_id or trailers.get("Cpv-Job", [uuid.uuid4().hex])[0],
            metrics=info.metrics,
            name=info.name,
        )
        if pointer is not None and pointer.md5 == info.md5 and current is not None:
            log.info("%s: same content already current remotely as %s; dropping", old, current)
            return old, version_tag(info.artifact, current)
        content = ContentHash(
            md5=info.md5,
            size=info.size,
            nfiles=info.nfiles,
            is_dir=info.is_dir,
            entries=(),
            manifest=None,
        )
        commit, tag = self._commit_version(req, content)
        new = VersionInfo(
            **{
                **info.__dict__,
                "version": tag.rpartition("@")[2],
                "commit": None,
                "stages": [],
                "current": False,
            }
        )
        new.parent = self._version_at(
            info.artifact, self.registry.git("rev-parse", f"{commit}^").strip()
        )
        self.registry.create_tag(tag, commit, new.message())
        self.invalidate()
        return old, tag

    def _replay_revert(self, trailers: dict[str, list[str]]) -> None:
        targets = []
        for value in trailers.get("Cpv-Current", []):
            name, _, version = value.rpartition("@")
            info = self.index().get(name, version)
            if info is not None:
                targets.append(info)
        if targets:
            self._commit_revert(targets)

    # -- promote --------------------------------------------------------------------------
    def promote(
        self, artifact: str, version: str, stage: str, with_data: bool = False
    ) -> list[dict[str, str]]:
        """Assign ``stage`` to a version (and its lineage data versions): all tags or none."""
        validate_stage(stage)
        for _ in range(5):
            targets = self._with_lineage(self.show(artifact, version), with_data)
            index = self.index()
            made: list[tuple[str, VersionInfo]] = []
            for info in targets:
                tag = f"{info.artifact}#{stage}#{index.next_stage_counter(info.artifact)}"
                assert info.commit
                message = (
                    f"Assigning stage {stage} to artifact {info.artifact} version {info.version}"
                )
                try:
                    self.registry.create_tag(tag, info.commit, message)
                except CpvError:
                    self.registry.delete_tags(t for t, _ in made)
                    raise
                made.append((tag, info))
            self.invalidate()
            if not self.registry.has_remote:
                break
            try:
                self.push()
                self.registry.push([f"refs/tags/{t}" for t, _ in made])
                break
            except PushRejected:
                self.registry.delete_tags(t for t, _ in made)
                self._fetch_all_tags()
                continue
            except GitError:
                self.registry.delete_tags(t for t, _ in made)
                self.invalidate()
                raise
        else:
            raise GitError("stage tags kept colliding with another machine's; try again")
        return [
            {"artifact": i.artifact, "version": i.version, "stage": stage, "tag": t}
            for t, i in made
        ]

    def _fetch_all_tags(self) -> None:
        remote = self.registry.remote_tags()
        local = read_index(self.registry.path).tags
        self.registry.fetch_tags(t for t in remote if t not in local)
        self.invalidate()

    def _with_lineage(self, info: VersionInfo, with_data: bool) -> list[VersionInfo]:
        targets = [info]
        if with_data:
            for data_name, data_version in sorted(info.lineage.items()):
                targets.append(self.show(data_name, data_version))
        return targets

    # -- revert ---------------------------------------------------------------------------
    def revert(
        self, artifact: str, version: str, with_data: bool = False, to: Path | None = None
    ) -> list[Reverted]:
        """Make ``version`` current again: bytes restored, pointer committed back. All or none."""
        targets = self._with_lineage(self.show(artifact, version), with_data)
        plans = [(info, self._revert_target(info, to)) for info in targets]
        staged: list[tuple[VersionInfo, Path, Path | None]] = []
        try:
            for info, dest in plans:
                if dest.exists() and self._content_md5(dest) == info.md5:
                    staged.append((info, dest, None))
                    continue
                staged.append((info, dest, self._download(info, dest.parent)))
            results = self._swap_in(staged)
        finally:
            for _, _, tmp in staged:
                if tmp is not None and tmp.exists():
                    _remove(tmp)
        self._commit_revert(targets)
        if self.registry.has_remote:
            self.push()
        return results

    def _revert_target(self, info: VersionInfo, to: Path | None) -> Path:
        base = Path(to) if to is not None else Path(info.source).parent
        if not base.is_absolute():
            raise InputError(f"revert target {base} must be an absolute path", "invalid_path")
        real = Path(os.path.realpath(base))
        if not any(real == r or r in real.parents for r in self.writable_roots):
            raise InputError(
                f"refusing to write to {base}: it is outside every watched directory "
                "(use --to with a directory inside a [[watch]] path)",
                "path_outside_watch",
            )
        real.mkdir(parents=True, exist_ok=True)
        return real / info.name

    def _content_md5(self, path: Path) -> str | None:
        try:
            return hash_checkpoint(path).md5
        except CpvError:
            return None

    def _swap_in(self, staged: list[tuple[VersionInfo, Path, Path | None]]) -> list[Reverted]:
        done: list[tuple[Path, Path | None]] = []  # (dest, backup) to undo on failure
        results = []
        try:
            for info, dest, tmp in staged:
                if tmp is None:
                    results.append(Reverted(info.artifact, info.version, str(dest), restored=False))
                    continue
                backup = None
                if dest.exists() or dest.is_symlink():
                    backup = self._backup(info, dest)
                os.replace(tmp, dest)
                done.append((dest, backup))
                results.append(
                    Reverted(
                        info.artifact, info.version, str(dest), str(backup) if backup else None
                    )
                )
        except OSError as exc:
            for dest, backup in reversed(done):
                _remove(dest)
                if backup is not None:
                    os.replace(backup, dest)
            raise CpvError(f"revert failed, nothing changed: {exc}") from exc
        return results

    def _backup(self, info: VersionInfo, dest: Path) -> Path:
        """Move whatever is at ``dest`` aside; it may be the only copy of someone's work."""
        folder = (
            self.state_dir / "backups" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / dest.name
        try:
            os.replace(dest, target)
        except OSError:  # another filesystem: copy, then remove
            if dest.is_dir():
                shutil.copytree(dest, target, symlinks=True)
            else:
                shutil.copy2(dest, target)
            _remove(dest)
        log.info("moved %s aside to %s before restoring %s", dest, target, info.tag)
        return target

    def _commit_revert(self, targets: list[VersionInfo]) -> None:
        rels = []
        for info in targets:
            rels.append(
                self.registry.write_pointer(
                    info.artifact, Pointer(info.md5, info.size, info.nfiles, info.is_dir)
                )
            )
        self.registry.commit(
            rels,
            "cpv: revert " + ", ".join(i.tag for i in targets),
            trailers={
                "Cpv-Job": uuid.uuid4().hex,
                "Cpv-Action": "revert",
                "Cpv-Current": [i.tag for i in targets],
            },
        )
        for info in targets:
            self._current.pop(info.artifact, None)
            self._pointers.pop(info.artifact, None)
        self.generation += 1

    # -- pull -----------------------------------------------------------------------------
    def manifest(self, artifact: str, version: str | None = None) -> Manifest:
        info = self.show(artifact, version)
        if info.is_dir:
            # DVC's .dir object records no sizes; the client sizes its download and checks
            # the byte count by them, so ask the storage (a stat, or one HEAD per file)
            files = [
                e if e.size else FileEntry(e.relpath, e.md5, self._stored_size(e.md5))
                for e in self._dir_entries(info.md5)
            ]
        else:
            files = [FileEntry(info.name, info.md5, info.size)]
        return Manifest(
            artifact,
            info.version,
            "dir" if info.is_dir else "file",
            info.name,
            info.md5,
            info.size,
            files,
        )

    def _stored_size(self, md5: str) -> int:
        size = self.storage.size_of(md5)
        if size is None:
            raise NotFound(f"object {md5} is missing from the storage")
        return size

    def _dir_entries(self, md5: str) -> list[FileEntry]:
        import json

        with self.storage.open_object(md5) as fh:
            data = fh.read()
        if hashlib.md5(data).hexdigest() + ".dir" != md5:
            raise IntegrityError(f"directory manifest {md5} is corrupt in the storage")
        return [FileEntry(e["relpath"], e["md5"], int(e.get("size", 0))) for e in json.loads(data)]

    def open_file(
        self, artifact: str, version: str | None, relpath: str
    ) -> tuple[BinaryIO, FileEntry]:
        for entry in self.manifest(artifact, version).files:
            if entry.relpath == relpath:
                return self.storage.open_object(entry.md5), entry
        raise NotFound(f"{artifact}@{version} has no file {relpath!r}")

    def pull(self, artifact: str, version: str | None, out_dir: Path) -> Path:
        """Write a version to ``out_dir/<name>``: verified, via a temporary name, then renamed."""
        info = self.show(artifact, version)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._download(info, out_dir)
        dest = out_dir / info.name
        if dest.exists():
            _remove(dest)
        os.replace(tmp, dest)
        return dest

    def _download(self, info: VersionInfo, where: Path) -> Path:
        """Download a version next to its destination; md5 checked on every file."""
        tmp = Path(tempfile.mkdtemp(prefix=".cpv-restore-", dir=where))
        try:
            if not info.is_dir:
                target = tmp / "f"
                self._fetch_object(info.md5, target)
                final = where / f".cpv-restore-{uuid.uuid4().hex}"
                os.replace(target, final)
                tmp.rmdir()
                return final
            for entry in self._dir_entries(info.md5):
                rel = Path(entry.relpath)
                if rel.is_absolute() or ".." in rel.parts:
                    raise IntegrityError(
                        f"manifest of {info.tag} has an unsafe path {entry.relpath!r}"
                    )
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self._fetch_object(entry.md5, target)
            return tmp
        except BaseException:
            _remove(tmp)
            raise

    def _fetch_object(self, md5: str, target: Path) -> None:
        h = hashlib.md5()
        with self.storage.open_object(md5) as src, open(target, "wb") as dst:
            while chunk := src.read(8 << 20):
                h.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if h.hexdigest() != md5:
            raise IntegrityError(f"object {md5} is corrupt in the storage (got {h.hexdigest()})")

    # -- verify ---------------------------------------------------------------------------
    def verify(self, sample: int | None = None, artifact: str | None = None) -> dict[str, Any]:
        """Re-hash the stored objects that version tags reference (like ``git annex fsck``)."""
        return self.verify_objects(self.verify_targets(sample, artifact))

    def verify_targets(
        self, sample: int | None = None, artifact: str | None = None
    ) -> list[VersionInfo]:
        """The versions :meth:`verify_objects` checks. Reads (and may cache) the registry
        index, so the daemon calls it on the registry thread: read elsewhere, an index read
        just before a new tag could be cached just after it invalidated the cache."""
        infos = [
            v for name, vs in self.index().versions.items() if artifact in (None, name) for v in vs
        ]
        if sample is not None and sample < len(infos):
            infos = random.sample(infos, sample)
        return infos

    def verify_objects(self, infos: list[VersionInfo]) -> dict[str, Any]:
        """Re-hash the stored objects of ``infos`` (storage reads only: any thread)."""
        missing: list[dict[str, str]] = []
        corrupt: list[dict[str, str]] = []
        checked = 0
        for info in infos:
            for md5, rel in self._objects_of(info, missing, corrupt):
                checked += 1
                if not self.storage.has(md5):
                    missing.append({"tag": info.tag, "object": md5, "relpath": rel})
                elif not self.storage.verify(md5):
                    corrupt.append({"tag": info.tag, "object": md5, "relpath": rel})
        return {"checked": checked, "versions": len(infos), "missing": missing, "corrupt": corrupt}

    def _objects_of(
        self, info: VersionInfo, missing: list[dict[str, str]], corrupt: list[dict[str, str]]
    ) -> Iterator[tuple[str, str]]:
        if not info.is_dir:
            yield info.md5, info.name
            return
        try:
            entries = self._dir_entries(info.md5)
        except NotFound:
            missing.append({"tag": info.tag, "object": info.md5, "relpath": ""})
            return
        except IntegrityError:
            corrupt.append({"tag": info.tag, "object": info.md5, "relpath": ""})
            return
        for e in entries:
            yield e.md5, e.relpath


def _pointer(content: ContentHash) -> Pointer:
    return Pointer(content.md5, content.size, content.nfiles, content.is_dir)


def _is_version(text: str) -> bool:
    try:
        Version.parse(text)
    except ValueError:
        return False
    return text.count(".") == 2


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


__all__ = [
    "Engine",
    "Manifest",
    "PushReport",
    "Reverted",
    "VersionRequest",
    "VersionResult",
    "now_iso",
]
