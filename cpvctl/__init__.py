"""cpvctl: the standard-library-only client of the CPV daemon.

Kept free of third-party imports so ``cpvctl --version`` starts in milliseconds.
"""

from cpvctl.protocol import API_VERSION, CPV_VERSION

__all__ = ["API_VERSION", "CPV_VERSION"]
