"""Which files and directories below a watch path are checkpoint units (DESIGN.md, "What
counts as a checkpoint").

A watched directory holds more than checkpoints: logs, TensorBoard event files,
``hparams.yaml``, trainer layouts nested several levels deep. Versioning every top-level entry
made ``train.log`` a version per append and Lightning's whole ``lightning_logs/`` one version
per epoch, so the rules are explicit and pure (relative posix paths in, verdicts out):

* ``entries``: each top-level file or directory is one unit (a data split, a shard directory).
* ``auto``: known checkpoint files at any depth are file units; Hugging Face
  ``checkpoint-N/``, DeepSpeed ``global_stepN/`` and torch DCP directories (holding
  ``.metadata`` or ``*.distcp`` shards) are directory units, taken whole; any other directory
  is descended into, never versioned whole.
* ``include`` globs replace the default patterns of their kind (file globs the checkpoint
  extensions, ``dir/`` globs the trainer directory rules); ``exclude`` wins over both.
  A glob without a ``/`` matches a name at any depth, one with a ``/`` the whole relative
  path (``**`` spans directories).
* Temporary and hidden names (``*.tmp``, dot-files, ``tmp-checkpoint-*``) on the way to a
  unit, sidecars (``<file>.metrics.json``) and trainer markers (``latest``) never are units;
  inside a directory unit every file is content (DCP's ``.metadata``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from cpvd.config.model import WatchConfig

Layout = Literal["auto", "entries"]
LAYOUTS: tuple[str, ...] = ("auto", "entries")

#: name patterns of files being written or owned by a writer, never versions
TEMP_PATTERNS: tuple[str, ...] = (
    "*.tmp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.lock",
    "*.swp",
    "*~",
    "tmp-checkpoint-*",
)
#: a ``<checkpoint>.metrics.json`` file belongs to ``<checkpoint>``
SIDECAR_SUFFIX = ".metrics.json"
#: files trainers write next to checkpoints that are not checkpoints themselves
MARKER_NAMES: frozenset[str] = frozenset({"latest", "zero_to_fp32.py"})
#: file units of the ``auto`` layout
CHECKPOINT_EXTS: frozenset[str] = frozenset(
    {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".keras", ".h5", ".npz", ".pkl"}
    | {".msgpack", ".gguf", ".onnx"}
)
HF_DIR = re.compile(r"checkpoint-\d+")
DEEPSPEED_DIR = re.compile(r"global_step\d+")
#: a directory holding one of these is a torch DCP checkpoint (``.metadata`` is renamed in last)
DCP_NAMES: frozenset[str] = frozenset({".metadata", ".metadata.tmp"})
DCP_SHARD_SUFFIX = ".distcp"
#: stat'ed for each directory an event passes through (a listing per event would be costly)
_DCP_PROBES: tuple[str, ...] = (".metadata", ".metadata.tmp", "__0_0.distcp")


def is_ignored_name(name: str) -> bool:
    """True for a name that can never be a checkpoint unit (temp, hidden, sidecar, marker)."""
    if not name or name.startswith(".") or name in MARKER_NAMES:
        return True
    if name.endswith(SIDECAR_SUFFIX):
        return True
    return any(fnmatch.fnmatchcase(name, pat) for pat in TEMP_PATTERNS)


def sidecar_owner(name: str) -> str | None:
    """``epoch-3.pt.metrics.json`` -> ``epoch-3.pt``; None when ``name`` is not a sidecar."""
    if not name.endswith(SIDECAR_SUFFIX):
        return None
    owner = name[: -len(SIDECAR_SUFFIX)]
    return None if not owner or is_ignored_name(owner) else owner


def name_reason(name: str) -> str | None:
    """Why a name is never a unit, in words for ``cpvctl status --ignored``; None if it may be."""
    if sidecar_owner(name) is not None or name.endswith(SIDECAR_SUFFIX):
        return "metrics sidecar (read into its checkpoint's version)"
    if name in MARKER_NAMES:
        return "trainer marker file, not a checkpoint"
    if name.startswith("."):
        return "hidden name"
    if is_ignored_name(name):
        return "temporary name (still being written)"
    return None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over relative posix paths: ``*`` and ``?`` stay within a name, ``**`` spans
    directories, ``[...]`` is a character class. No ``/``: the name at any depth."""
    body = pattern.rstrip("/")
    if "/" not in body:
        body = "**/" + body
    out, i = [], 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        elif body[i] == "[" and (end := body.find("]", i + 2)) != -1:
            cls = body[i + 1 : end]
            negate = cls[0] == "!"
            cls = re.sub(r"([\\\[\]^&~|])", r"\\\1", cls[1:] if negate else cls)
            out.append("[" + ("^/" if negate else "") + cls + "]")
            i = end + 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    return re.compile("".join(out))


def glob_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a usable include/exclude glob; None when it is."""
    if not isinstance(pattern, str) or not pattern.strip("/"):
        return f"must be a non-empty glob, got {pattern!r}"
    if pattern.startswith("/") or "\0" in pattern:
        return f"must be relative to the watch path (no leading '/'), got {pattern!r}"
    if ".." in pattern.split("/"):
        return f"must not contain '..', got {pattern!r}"
    return None


@dataclass(frozen=True)
class _Glob:
    pattern: str
    regex: re.Pattern[str]
    dir_only: bool

    @classmethod
    def of(cls, pattern: str) -> _Glob:
        return cls(pattern, glob_regex(pattern), pattern.endswith("/"))

    def matches(self, rel: str, is_dir: bool) -> bool:
        return (is_dir or not self.dir_only) and self.regex.fullmatch(rel) is not None


@dataclass(frozen=True)
class UnitRules:
    """One watch's unit rules (see the module docstring); ``entries`` keeps the old
    behaviour, one unit per top-level entry."""

    layout: Layout = "entries"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _files: tuple[_Glob, ...] = field(init=False, repr=False, compare=False)
    _dirs: tuple[_Glob, ...] = field(init=False, repr=False, compare=False)
    _exclude: tuple[_Glob, ...] = field(init=False, repr=False, compare=False)

    @classmethod
    def for_watch(cls, watch: WatchConfig) -> UnitRules:
        return cls(cast(Layout, watch.unit_layout), watch.include, watch.exclude)

    def __post_init__(self) -> None:
        globs = [_Glob.of(p) for p in self.include]
        object.__setattr__(self, "_files", tuple(g for g in globs if not g.dir_only))
        object.__setattr__(self, "_dirs", tuple(g for g in globs if g.dir_only))
        object.__setattr__(self, "_exclude", tuple(_Glob.of(p) for p in self.exclude))

    def pruned(self, rel: str, is_dir: bool) -> str | None:
        """Why nothing at or below ``rel`` (on the way to a unit) can be a unit, else None."""
        reason = name_reason(rel.rpartition("/")[2])
        if reason is not None:
            return reason
        for g in self._exclude:
            if g.matches(rel, is_dir):
                return f"excluded by {g.pattern!r}"
        return None

    def is_dir_unit(self, rel: str, children: Collection[str] = ()) -> bool:
        """``rel`` (a directory that is not pruned) is taken whole; ``children``: its names,
        as far as known (a torch DCP directory is told by its ``.metadata`` and shards)."""
        if self.layout == "entries":
            return "/" not in rel and self._included(rel, True)
        if self._dirs:
            return any(g.matches(rel, True) for g in self._dirs)
        name = rel.rpartition("/")[2]
        if HF_DIR.fullmatch(name) or DEEPSPEED_DIR.fullmatch(name):
            return True
        return any(c in DCP_NAMES or c.endswith(DCP_SHARD_SUFFIX) for c in children)

    def is_file_unit(self, rel: str) -> bool:
        """``rel`` (a regular file that is not pruned, outside any directory unit) is a unit."""
        if self.layout == "entries":
            return "/" not in rel and self._included(rel, False)
        if self._files:
            return any(g.matches(rel, False) for g in self._files)
        return os.path.splitext(rel)[1].lower() in CHECKPOINT_EXTS

    def file_reason(self, rel: str) -> str:
        """Why a file that is not pruned is still not a unit (for ``--ignored``)."""
        if self.layout == "entries":
            return "below a top-level entry" if "/" in rel else "not matched by include"
        if self._files:
            return "not matched by include"
        name = rel.rpartition("/")[2]
        if name.startswith("events.out.tfevents."):
            return "TensorBoard event file"
        ext = os.path.splitext(name)[1]
        kind = f"{ext!r} is no checkpoint extension" if ext else "no extension"
        return f"not a checkpoint file ({kind}; include can add it)"

    def _included(self, name: str, is_dir: bool) -> bool:
        if not self.include:
            return True
        return any(g.matches(name, is_dir) for g in (*self._files, *self._dirs))


def unit_of(
    root: Path, path: Path, rules: UnitRules, known: Callable[[Path], bool] = lambda p: False
) -> Path | None:
    """The unit ``path`` (at or below ``root``) belongs to, or None. Lexical, except that
    it stats a few names to tell a torch DCP directory and whether the last part is one.
    ``known``: units already tracked (a path inside one maps to it without any stat)."""
    parts = _parts(root, path)
    if not parts:
        return None
    base = Path(os.path.normpath(os.fspath(root)))
    for i in range(len(parts)):
        here = base.joinpath(*parts[: i + 1])
        if known(here):
            return here
        rel = "/".join(parts[: i + 1])
        last = i == len(parts) - 1
        is_dir = not last or (os.path.isdir(here) and not os.path.islink(here))
        if rules.pruned(rel, is_dir) is not None:
            return None
        if not is_dir:
            return here if rules.is_file_unit(rel) else None
        hint = () if last else (parts[i + 1],)
        if rules.is_dir_unit(rel, hint) or (rules.layout == "auto" and _dcp_probe(here)):
            return here
    return None


def _dcp_probe(d: Path) -> bool:
    return any(os.path.lexists(d / name) for name in _DCP_PROBES)


def _parts(root: Path, path: Path) -> list[str]:
    r = os.path.normpath(os.fspath(root))
    p = os.path.normpath(os.fspath(path))
    prefix = r if r.endswith(os.sep) else r + os.sep
    if not p.startswith(prefix):
        return []
    parts = p[len(prefix) :].split(os.sep)
    return [] if any(x in ("", ".", "..") for x in parts) else parts


def unit_relpath(source: str, watches: Iterable[WatchConfig]) -> str | None:
    """Where ``source`` sits below the watch path holding it, as a posix relative path
    (``lightning_logs/version_3/checkpoints/epoch=1-step=9.ckpt``); None outside every watch.
    Kept in the version's metadata so the run a checkpoint came from stays known."""
    for w in watches:
        parts = _parts(w.path, Path(source))
        if parts:
            return "/".join(parts)
    return None
