"""Default locations (platformdirs), per DESIGN.md "Where things live"."""

from __future__ import annotations

import os
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
    return Path(platformdirs.user_runtime_dir(APP)) / "cpvd.sock"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP))


def default_registry() -> Path:
    return Path(platformdirs.user_data_dir(APP)) / "registry"


def default_storage() -> Path:
    return Path(platformdirs.user_data_dir(APP)) / "storage"
