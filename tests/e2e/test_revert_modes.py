"""``revert --with-data`` gives a restored data directory the mode a directory made under the
daemon's umask has (it came back 0700, from mkdtemp), and one that replaces an existing
checkpoint keeps that one's mode (issue 14)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, versions_of, wait_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_revert_with_data_restores_directory_modes(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    umask = os.umask(0o022)  # the daemon inherits it, as from systemd's default
    try:
        data, models = short_tmp / "data", short_tmp / "models"
        d = daemon_factory(
            watches=[
                Watch(data, "demo/data", kind="data"),
                Watch(models, "demo/model", data=["demo/data"]),
            ]
        )
        with d:
            split = data / "split-a"
            split.mkdir(parents=True)
            os.chmod(split, 0o755)
            (split / "part-0.bin").write_bytes(b"rows" * 500)
            wait_for(lambda: versions_of(d, "demo/data") == ["v1.0.0"], what="data v1.0.0")
            (models / "epoch-1.bin").write_bytes(b"weights" * 500)
            wait_for(lambda: versions_of(d, "demo/model") == ["v1.0.0"], what="model v1.0.0")

            # gone: restored as a directory made under the umask would be
            (split / "part-0.bin").unlink()
            split.rmdir()
            d.client().revert("demo/model", "v1.0.0", with_data=True)
            assert (split / "part-0.bin").read_bytes() == b"rows" * 500
            assert _mode(split) == 0o755

            # replaced: keeps the mode of the one it replaces
            (split / "part-0.bin").write_bytes(b"other")
            os.chmod(split, 0o750)
            d.client().revert("demo/model", "v1.0.0", with_data=True)
            assert (split / "part-0.bin").read_bytes() == b"rows" * 500
            assert _mode(split) == 0o750
    finally:
        os.umask(umask)
