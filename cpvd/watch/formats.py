"""Cheap "is this checkpoint whole?" checks, per format, reading only headers and footers.

Why: a quiet period alone cannot tell a finished ``torch.save`` from a trainer that paused
mid-write (or died). Each writer leaves a cheap tell-tale when it is done: a zip's central
directory is written last, a safetensors header declares the exact data size, HDF5's
superblock records the end-of-file address, Hugging Face writes ``trainer_state.json`` last,
torch DCP renames ``.metadata`` into place last, DeepSpeed writes ``latest`` last. None of
these reads the payload, so validating a multi-GiB checkpoint costs a few small reads.

``validate`` returns None when valid, else a short human reason (shown by ``cpvctl status``).
Unknown formats are valid: the quiet period is all we can go on for them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import zipfile
from pathlib import Path

#: extensions that are zip archives when written by torch.save / Lightning / Keras
ZIP_EXTS = frozenset({".pt", ".pth", ".ckpt", ".keras", ".zip"})
#: torch extensions that may also hold the legacy (pre-1.6) pickle format, which is not a zip
TORCH_EXTS = frozenset({".pt", ".pth", ".ckpt", ".bin"})
SAFETENSORS_EXTS = frozenset({".safetensors"})
HDF5_EXTS = frozenset({".h5", ".hdf5"})
#: formats whose files are never empty when whole
KNOWN_EXTS = ZIP_EXTS | TORCH_EXTS | SAFETENSORS_EXTS | HDF5_EXTS

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: safetensors refuses headers above 100 MB; so do we (and never read a bigger one)
MAX_SAFETENSORS_HEADER = 100_000_000
HF_CHECKPOINT_RE = re.compile(r"checkpoint-\d+")
DEEPSPEED_STEP_RE = re.compile(r"global_step(\d+)")


def validate(path: Path) -> str | None:
    """None when ``path`` (a file or directory checkpoint) looks complete, else why not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return validate_dir(Path(path))
    if stat.S_ISREG(st.st_mode):
        return validate_file(Path(path), st.st_size)
    return "not a regular file or directory"


def validate_file(path: Path, size: int | None = None, *, in_dir: bool = False) -> str | None:
    """Validate one file by its extension (and magic bytes for ambiguous ``.bin``/``.pt``).

    An empty file is a writer that has only just created it, except inside a directory
    checkpoint where an empty file of no known format is content like any other (an empty
    ``.gitkeep``, marker or log file): rejecting it would leave the checkpoint waiting
    forever."""
    try:
        if size is None:
            size = os.stat(path).st_size
        ext = path.suffix.lower()
        if size == 0:
            return "empty file" if ext in KNOWN_EXTS or not in_dir else None
        if ext in ZIP_EXTS or ext == ".bin":
            return _validate_zipish(path, ext)
        if ext in SAFETENSORS_EXTS:
            return _validate_safetensors(path, size)
        if ext in HDF5_EXTS:
            return _validate_hdf5(path, size)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return None


def validate_dir(path: Path) -> str | None:
    """Writer rules for directory checkpoints, then every file inside by its extension."""
    files: list[Path] = []
    dirs_with_distcp: set[Path] = set()
    step_dirs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(path):
        d = Path(dirpath)
        if DEEPSPEED_STEP_RE.fullmatch(d.name):
            step_dirs.append(d)
        dirnames.sort()
        for name in sorted(filenames):
            files.append(d / name)
            if name.endswith(".distcp"):
                dirs_with_distcp.add(d)
    if not files:
        return "empty directory"
    if HF_CHECKPOINT_RE.fullmatch(path.name):
        reason = _check_json(path / "trainer_state.json")
        if reason:
            return reason
    for d in sorted(dirs_with_distcp):
        if not (d / ".metadata").is_file():
            where = _rel(path, d / ".metadata")
            return f"torch DCP shards without {where} (written last, by rename)"
    for d in step_dirs:
        reason = _check_deepspeed(d)
        if reason:
            return reason
    for f in files:
        if f.is_symlink() and not f.exists():
            continue
        reason = validate_file(f, in_dir=True)
        if reason:
            return f"{_rel(path, f)}: {reason}"
    return None


def _rel(root: Path, p: Path) -> str:
    return os.path.relpath(p, root.parent)


def _check_json(p: Path) -> str | None:
    try:
        json.loads(p.read_bytes())
    except FileNotFoundError:
        return f"no {p.name} yet (written last)"
    except OSError as exc:
        return f"{p.name}: cannot read: {exc.strerror}"
    except ValueError:
        return f"{p.name} is not complete JSON"
    return None


def _check_deepspeed(step_dir: Path) -> str | None:
    """``global_stepN/`` is complete once ``latest`` beside it names it (or a later step)."""
    m = DEEPSPEED_STEP_RE.fullmatch(step_dir.name)
    assert m is not None
    marker = step_dir.parent / "latest"
    try:
        named = marker.read_text().strip()
    except FileNotFoundError:
        return f"DeepSpeed {step_dir.name} without a 'latest' file naming it"
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read DeepSpeed 'latest': {exc}"
    if named == step_dir.name:
        return None
    mn = DEEPSPEED_STEP_RE.fullmatch(named)
    if mn and int(mn.group(1)) > int(m.group(1)):
        return None  # the trainer has moved on: this step was finished before
    return f"DeepSpeed 'latest' names {named!r}, not {step_dir.name}"


def _validate_zipish(path: Path, ext: str) -> str | None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":
        if ext in TORCH_EXTS and magic[:1] == b"\x80":
            return None  # legacy torch pickle format: no cheap completeness check exists
        if ext == ".bin":
            return None  # not a zip at all: an opaque binary, unknown format
        return "not a zip archive (no PK signature)"
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            start_dir = getattr(zf, "start_dir", None)
    except zipfile.BadZipFile as exc:
        return f"torn zip: {exc}"
    except (ValueError, EOFError) as exc:
        return f"torn zip: {exc}"
    if isinstance(start_dir, int):
        for info in infos:
            if info.header_offset + info.compress_size > start_dir:
                return f"torn zip: member {info.filename!r} overlaps the central directory"
    return None


def _validate_safetensors(path: Path, size: int) -> str | None:
    if size < 8:
        return "safetensors file shorter than its 8-byte header length"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_SAFETENSORS_HEADER:
            return f"safetensors header length {n} is implausible"
        if 8 + n > size:
            return f"safetensors header says {n} header bytes, file has {size - 8}"
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return "safetensors header is not valid JSON"
    if not isinstance(header, dict):
        return "safetensors header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            return f"safetensors tensor {name!r} has bad data_offsets"
        end = max(end, offsets[1])
    expected = 8 + n + end
    if expected != size:
        return f"safetensors header declares {expected} bytes, file has {size}"
    return None


def _validate_hdf5(path: Path, size: int) -> str | None:
    """Signature at 0, 512, 1024, … (user block); superblock EOF address must fit the file."""
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == HDF5_SIGNATURE:
                sb = f.read(96)
                return _check_hdf5_eof(sb, offset, size)
            offset = 512 if offset == 0 else offset * 2
    return "no HDF5 signature"


def _check_hdf5_eof(sb: bytes, sig_offset: int, size: int) -> str | None:
    """Read the end-of-file address from a v0-v3 superblock (``sb`` follows the signature)."""
    if not sb:
        return "HDF5 superblock missing"
    version = sb[0]
    if version in (0, 1):
        if len(sb) < 16:
            return "HDF5 superblock truncated"
        so = sb[5]  # size of offsets
        pos = 8 + 2 + 2 + 4 + (4 if version == 1 else 0)
        addr_fields = 3  # base, free-space info, end-of-file
    elif version in (2, 3):
        so = sb[1]
        pos = 4
        addr_fields = 3  # base, superblock extension, end-of-file
    else:
        return None  # unknown future superblock: signature is all we check
    if so not in (2, 4, 8) or len(sb) < pos + so * addr_fields:
        return "HDF5 superblock truncated"
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[so]
    base = struct.unpack_from(fmt, sb, pos)[0]
    eof = struct.unpack_from(fmt, sb, pos + 2 * so)[0]
    undefined = (1 << (8 * so)) - 1
    if eof == undefined:
        return None
    if base == undefined:
        base = sig_offset
    if base + eof > size:
        return f"HDF5 superblock says {base + eof} bytes, file has {size}"
    return None
