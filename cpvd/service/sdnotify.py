"""The systemd notification protocol (``sd_notify``), without libsystemd.

Why here and not a dependency: the whole protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram of
``KEY=VALUE`` lines to the path in ``$NOTIFY_SOCKET`` (a leading ``@`` names the Linux abstract
namespace). With ``Type=notify`` systemd considers the service started only on ``READY=1``,
so the daemon sends it once recovery, the watches and the API socket are up; with
``WatchdogSec=`` it restarts the daemon if ``WATCHDOG=1`` stops arriving, which catches a
wedged event loop that a plain ``Restart=on-failure`` never sees.

Outside systemd (a terminal, launchd, tests) ``$NOTIFY_SOCKET`` is unset and every call is a
no-op, so the daemon calls these unconditionally. A notification that cannot be delivered is
logged and dropped: it must never take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

#: A send blocks when the receiver's queue is full; never let that stall the event loop.
SEND_TIMEOUT = 1.0

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str | None) -> str | None:
    """``$NOTIFY_SOCKET`` as an ``AF_UNIX`` address, or None when unset or not a Unix socket.

    systemd ≥ 254 may also hand out ``vsock:`` addresses (for VMs); those are not ours to
    handle and count as "not under systemd".
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is not a Unix socket path; notifications disabled", value)
    return None


class Notifier:
    """Sends service-manager notifications; every method is a no-op when not under systemd.

    The environment is read once, at construction. ``unset_environment=True`` removes the
    three variables from ``env`` (``os.environ`` by default) afterwards, like libsystemd's
    ``sd_notify(1, ...)``, so git, ssh and dvc subprocesses do not inherit them.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> None:
        source: Mapping[str, str] = os.environ if env is None else env
        self._address = _address(source.get("NOTIFY_SOCKET"))
        self._watchdog_usec = source.get("WATCHDOG_USEC")
        self._watchdog_pid = source.get("WATCHDOG_PID")
        if unset_environment and isinstance(source, MutableMapping):
            for key in _ENV_KEYS:
                source.pop(key, None)

    @property
    def enabled(self) -> bool:
        """True when a service manager asked for notifications ($NOTIFY_SOCKET is set)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True if it was delivered to the socket.

        Returns False (and logs) instead of raising: the service manager being gone or busy
        is no reason to stop versioning checkpoints.
        """
        if self._address is None or not assignments:
            return False
        for line in assignments:
            if "\n" in line or "=" not in line:
                raise ValueError(f"not a KEY=VALUE line: {line!r}")
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", assignments[0].split("=", 1)[0], exc)
            return False
        return True

    def ready(self) -> bool:
        """The service is up: systemd finishes ``systemctl start`` and starts dependents."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Shutdown has begun (draining); systemd shows "deactivating" instead of a failure."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status`` (e.g. ``queue: 3``)."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """Keep-alive: systemd restarts the service if these stop for ``WatchdogSec``."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd's start/stop timeout fires (long recovery)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_timeout(self) -> float | None:
        """systemd's watchdog timeout in seconds (``WatchdogSec=``), or None if none is armed.

        ``WATCHDOG_PID``, when set, names the process the watchdog is meant for; in any other
        process (a forked helper) the answer is None, as with ``sd_watchdog_enabled``.
        """
        if self._address is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; watchdog off", self._watchdog_usec)
            return None
        return usec / 1_000_000 if usec > 0 else None

    def watchdog_interval(self) -> float | None:
        """How often to call :meth:`watchdog`, in seconds: half the timeout, or None.

        Half, as systemd's documentation recommends, so one late tick does not cost a restart.
        """
        timeout = self.watchdog_timeout()
        return None if timeout is None else timeout / 2
