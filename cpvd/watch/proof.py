"""When a file checkpoint proves itself complete, so it need not wait out a quiet period.

The quiet period exists for writers that give no sign of being done. Two signs are proof:

* an atomic rename of a temporary name inside the watch to the file's final name
  (``x.safetensors.tmp`` -> ``x.safetensors``): writers rename only what they finished;
* a close after writing (``IN_CLOSE_WRITE``) of a file whose format carries its own end
  marker and reads as whole: a zip's central directory (``torch.save``, Lightning, Keras),
  a safetensors header that declares the file's exact size, an HDF5 superblock's end
  address. A format without one (a raw ``.bin``, a legacy torch pickle) proves nothing
  by a close: a file appended chunk by chunk, closed after each, must stay one version.

Either way the format is still validated before the checkpoint counts (cpvd.watch.settle),
and any later activity on the file starts an ordinary quiet period again.
"""

from __future__ import annotations

from pathlib import Path

from cpvd.watch.formats import HDF5_EXTS, SAFETENSORS_EXTS, ZIP_EXTS, validate_file

#: formats whose whole file can be told from a torn one by their own end marker
SELF_PROVING_EXTS = ZIP_EXTS | SAFETENSORS_EXTS | HDF5_EXTS


def closed_whole(path: Path) -> bool:
    """Does the file its writer just closed prove, by its format, that it is whole?"""
    ext = path.suffix.lower()
    if ext not in SELF_PROVING_EXTS:
        return False
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError:
        return False
    if ext in ZIP_EXTS and magic != b"PK":
        return False  # a legacy torch pickle: valid, but without an end marker
    return validate_file(path) is None
