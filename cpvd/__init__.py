"""cpvd: the CPV daemon and its versioning engine."""

from cpvctl.protocol import CPV_VERSION as __version__

__all__ = ["__version__"]
