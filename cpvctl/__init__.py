"""cpvctl: the standard-library-only client of the CPV daemon.

Kept free of third-party imports so ``cpvctl --version`` starts in milliseconds.
"""

from cpvctl.protocol import API_VERSION, CPV_VERSION

__all__ = ["API_VERSION", "CPV_VERSION", "Client"]


def __getattr__(name: str) -> object:
    """``cpvctl.Client`` without importing the HTTP client on ``cpvctl --version``."""
    if name == "Client":
        from cpvctl.client import Client

        return Client
    raise AttributeError(name)
