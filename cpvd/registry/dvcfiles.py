"""The DVC files of the registry: ``.dvc`` pointers, ``dvc.yaml`` and ``.dvc/config``.

Written with the libraries DVC itself uses (``ruamel.yaml`` for YAML, ``configobj`` for the
INI-like config), so a fresh clone's ``dvc pull`` reads them exactly as it reads its own;
the output is byte for byte what ``dvc add`` and ``dvc remote add`` write, so a registry
opened by a newer cpvd finds nothing to change.

Everything read back comes from a Git repository other machines (and people) push to, so
parsing trusts nothing: a malformed file raises :class:`DvcFileError` naming what is wrong.
This module only renders and parses text; reading and writing the files is ``repo``'s job.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from configobj import ConfigObj  # type: ignore[import-untyped]
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from cpvd.errors import CpvError, InputError
from cpvd.registry.safety import UnsafeInput, safe_artifact, safe_md5, safe_text

DVC_REMOTE = "storage"
POINTER_STEM = "checkpoint"
#: a pointer or ``dvc.yaml`` is a few hundred bytes per artifact; far more is not ours
MAX_TEXT = 4 << 20


class DvcFileError(CpvError):
    """A DVC file in the registry is not what DVC (or cpvd) would have written."""

    code = "internal"


@dataclass(frozen=True)
class Pointer:
    """What a ``.dvc`` file records about one output."""

    md5: str
    size: int
    nfiles: int
    is_dir: bool


def artifact_dir(artifact: str) -> str:
    return f"artifacts/{artifact}"


def pointer_file(artifact: str) -> str:
    return f"{artifact_dir(artifact)}/{POINTER_STEM}.dvc"


def output_path(artifact: str) -> str:
    return f"{artifact_dir(artifact)}/{POINTER_STEM}"


def overlapping(a: str, b: str) -> bool:
    """Whether two artifacts' paths collide: one's folder is, or is inside, the other's
    pulled output (``t1`` and ``t1/checkpoint``: ``artifacts/t1/checkpoint`` is both).
    DVC refuses overlapping outputs and git would ignore the inner pointer."""
    if a == b:
        return False
    a_out, b_out = output_path(a) + "/", output_path(b) + "/"
    return (artifact_dir(b) + "/").startswith(a_out) or (artifact_dir(a) + "/").startswith(b_out)


def refuse_overlaps(new: Iterable[str], known: Iterable[str]) -> None:
    """InputError ``artifact_overlaps`` naming both when a new artifact collides with any
    known one (checked before anything is written, so nothing needs undoing)."""
    known = list(known)
    for a in new:
        for b in known:
            if overlapping(a, b):
                outer = a if len(a) < len(b) else b
                raise InputError(
                    f"artifact {a!r} cannot live in this registry next to {b!r}: their "
                    f"pointers {pointer_file(a)} and {pointer_file(b)} overlap ({outer!r}'s "
                    f"pulled bytes at {output_path(outer)} would hold the other's pointer); "
                    f"choose a name that is not nested under '<artifact>/{POINTER_STEM}'",
                    "artifact_overlaps",
                )


def render_pointer(p: Pointer) -> str:
    """A DVC 3 ``.dvc`` file, field order as ``dvc add`` writes it."""
    out: dict[str, Any] = {"md5": p.md5, "size": p.size}
    if p.is_dir:
        out["nfiles"] = p.nfiles
    out.update({"hash": "md5", "path": POINTER_STEM})
    return _dump({"outs": [out]})


def parse_pointer(text: str, where: str = ".dvc file") -> Pointer:
    """The first output of a ``.dvc`` file; DvcFileError when there is none or it is bad."""
    outs = _load(text, where).get("outs")
    if not isinstance(outs, list) or not outs or not isinstance(outs[0], dict):
        raise DvcFileError(f"{where}: no `outs` entry")
    out = outs[0]
    md5, size, nfiles = out.get("md5"), out.get("size", 0), out.get("nfiles", 1)
    if not isinstance(md5, str) or not md5:
        raise DvcFileError(f"{where}: the output has no md5")
    try:
        safe_md5(md5)
    except UnsafeInput as exc:
        raise DvcFileError(f"{where}: {exc.message}") from exc
    if not _is_count(size) or not _is_count(nfiles):
        raise DvcFileError(f"{where}: size and nfiles must be non-negative integers")
    return Pointer(md5=md5, size=size, nfiles=nfiles, is_dir=md5.endswith(".dir"))


def render_dvc_yaml(artifacts: Mapping[str, str]) -> str:
    """``dvc.yaml`` listing each artifact (name -> kind) at its one pointer path."""
    entries = {
        name: {"path": output_path(name), "type": artifacts[name]} for name in sorted(artifacts)
    }
    return _dump({"artifacts": entries})


def parse_dvc_yaml(text: str, where: str = "dvc.yaml") -> dict[str, str]:
    """Artifact name -> type from ``dvc.yaml`` (an empty file lists none)."""
    if not text.strip():
        return {}
    artifacts = _load(text, where).get("artifacts") or {}
    if not isinstance(artifacts, dict):
        raise DvcFileError(f"{where}: `artifacts` is not a mapping")
    out: dict[str, str] = {}
    for name, entry in artifacts.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise DvcFileError(f"{where}: artifact {name!r} is not a mapping of fields")
        kind = entry.get("type", "model")
        if not isinstance(kind, str):
            raise DvcFileError(f"{where}: artifact {name!r} has a type that is not text")
        try:
            safe_artifact(name)
            safe_text(kind, "type")
        except UnsafeInput as exc:
            raise DvcFileError(f"{where}: {exc.message}") from exc
        out[name] = kind
    return out


def render_dvc_config(remote_settings: Mapping[str, str]) -> str:
    """``.dvc/config``: the default remote (settings without secrets), analytics off."""
    config = ConfigObj(indent_type="    ")
    config["core"] = {
        "remote": DVC_REMOTE,
        "analytics": "false",
        "check_update": "false",
        "autostage": "true",
    }
    config[f'remote "{DVC_REMOTE}"'] = dict(remote_settings)
    lines: list[str] = config.write()
    return "\n".join(lines) + "\n"


def _dump(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    YAML().dump(data, buf)  # round-trip dumper: the layout DVC writes
    return buf.getvalue()


def _load(text: str, where: str) -> dict[str, Any]:
    if len(text) > MAX_TEXT:
        raise DvcFileError(f"{where}: {len(text)} bytes is too large for a DVC file")
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise DvcFileError(f"{where} is not valid YAML: {exc}") from exc
    except RecursionError as exc:  # nesting deep enough to exhaust the parser's stack
        raise DvcFileError(f"{where} is nested too deeply to be a DVC file") from exc
    if not isinstance(data, dict):
        raise DvcFileError(f"{where}: expected a mapping at the top level")
    return data


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
