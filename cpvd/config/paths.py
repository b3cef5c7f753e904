"""Default locations (platformdirs), per DESIGN.md "Where things live"."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import platformdirs

APP = "cpv"


def default_config_file() -> Path:
    env = os.environ.get("CPV_CONFIG")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP)) / "cpvd.toml"


def default_socket() -> Path:
    env = os.environ.get("CPV_SOCKET")
    if env:
        return Path(env)
    with warnings.catch_warnings():
        # without XDG_RUNTIME_DIR platformdirs warns and falls back; the fallback is fine and
        # the socket directory is checked (owner, 0700) by the daemon itself
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir(APP)) / "cpvd.sock"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP))


def default_registry() -> Path:
    return Path(platformdirs.user_data_dir(APP)) / "registry"


def default_storage() -> Path:
    return Path(platformdirs.user_data_dir(APP)) / "storage"
