"""Paths and names in a config that must not overlap.

Why: a watch on the storage directory, on the registry or around the state directory sees
the daemon's own writes and versions them, which writes more, forever (a measured run went
from 22 to 56 tags in 40 s). A watch inside another watch versions the inner files twice.
Two artifacts whose names nest (``t1`` and ``t1/checkpoint``) have pointer paths in the
registry that overlap (``artifacts/t1`` holds ``artifacts/t1/checkpoint``). Paths are compared
resolved (``realpath``), so a symlink or a ``..`` cannot hide an overlap.
"""

from __future__ import annotations

import os
from pathlib import Path

from cpvd.config.model import Config


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _nested(a: Path, b: Path) -> str | None:
    """How ``a`` relates to ``b`` when they overlap: "is", "is inside", "contains"; else None."""
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def _own_paths(cfg: Config) -> list[tuple[str, Path]]:
    """The daemon's own directories, each with the key that sets it."""
    own = [("[daemon] state_dir", cfg.daemon.state_dir)]
    if not cfg.registries:  # else the first profile fills [registry] and [storage]
        own.append(("[registry] path", cfg.registry.path))
        if not cfg.storage.is_s3:
            own.append(("[storage] url", Path(cfg.storage.url)))
    own += [(f"[[registry]] #{i} path", r.path) for i, r in enumerate(cfg.registries, 1)]
    own += [
        (f"[[storage]] #{i} url", Path(s.url))
        for i, s in enumerate(cfg.storages, 1)
        if not s.is_s3
    ]
    return own


def overlap_problems(cfg: Config) -> list[str]:
    """Every overlap in ``cfg``, one message each naming both keys and both paths."""
    problems: list[str] = []
    watches = [(f"[[watch]] #{i} path", w, _real(w.path)) for i, w in enumerate(cfg.watches, 1)]
    for key, w, real in watches:
        for own_key, own in _own_paths(cfg):
            how = _nested(real, _real(own))
            if how is not None:
                problems.append(
                    f"{key} {_shown(w.path, real)} {how} {own_key} {_shown(own, _real(own))}: "
                    "the daemon would version its own writes; watch a directory apart from it"
                )
    for n, (key, w, real) in enumerate(watches):
        for key2, w2, real2 in watches[n + 1 :]:
            how = _nested(real2, real)
            if how is not None:
                problems.append(
                    f"{key2} {_shown(w2.path, real2)} {how} {key} {_shown(w.path, real)}: "
                    "its files would be versioned twice; keep watched directories apart"
                )
    for i, w in enumerate(cfg.watches, 1):
        for j, w2 in enumerate(cfg.watches[i:], i + 1):
            (o, outer), (n, inner) = sorted([(i, w.artifact), (j, w2.artifact)], key=_by_len)
            if inner.startswith(outer + "/"):
                problems.append(
                    f"[[watch]] #{n} artifact {inner!r} is nested under [[watch]] #{o} "
                    f"artifact {outer!r}: their pointer paths in the registry would overlap; "
                    "rename one (e.g. t1-checkpoint instead of t1/checkpoint)"
                )
    return problems


def _by_len(item: tuple[int, str]) -> int:
    return len(item[1])


def _shown(path: Path, real: Path) -> str:
    return f'"{path}"' if Path(os.path.expanduser(path)) == real else f'"{path}" (= "{real}")'
