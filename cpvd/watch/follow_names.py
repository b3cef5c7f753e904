"""Which files being written are worth following (copying and hashing as they grow).

A file unit written in place (``torch.save(path)``), or a temporary name inside the watch
that a writer renames to a file unit when done (``x.safetensors.tmp``, ``x.pt.part``,
``.x.pt`` for writers that hide the file until it is whole). Everything else a watch holds
(logs, TensorBoard event files appended for hours) is never followed: it would fill the
snapshot store with copies nobody versions. Files inside a directory unit are not followed
either (they settle with their directory). Pure, apart from the few stats ``unit_of`` makes.
"""

from __future__ import annotations

from pathlib import Path

from cpvd.watch.units import UnitRules, unit_of

#: name endings a writer adds to a checkpoint's final name while it writes it
TEMP_SUFFIXES: tuple[str, ...] = (".tmp", ".part", ".partial")


def final_name(name: str) -> str:
    """``x.safetensors.tmp`` -> ``x.safetensors``; ``.x.pt`` -> ``x.pt``; others unchanged."""
    for suffix in TEMP_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name.lstrip(".") or name


def is_followed(root: Path, rules: UnitRules, path: Path) -> bool:
    """Is ``path`` (below ``root``) a file unit, or the temporary name of one?"""
    target = path.with_name(final_name(path.name))
    return unit_of(root, target, rules) == target
