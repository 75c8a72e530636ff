"""systemd's notify protocol (sd_notify(3)), for `Type=notify` with a watchdog.

A datagram to the socket named by `NOTIFY_SOCKET` (an absolute path, or `@name` in the abstract
namespace): `READY=1` once the gateway serves, `WATCHDOG=1` at half of `WATCHDOG_USEC` while it is
healthy, `RELOADING=1` then `READY=1` around a reload, `STOPPING=1` on the way out, `STATUS=…`
for `systemctl status`. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

log = logging.getLogger(__name__)

# systemd reads a notification of up to a page; a status line is cut well before that
STATUS_MAX_CHARS: Final = 200


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000
        self._socket: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> None:
        """Send one notification (its lines joined); a failure is logged once, never raised."""
        if self._address is None:
            return
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.settimeout(0.0)  # never blocks the loop: a full queue is an error
            self._socket.sendto(message, self._address)
        except OSError as err:
            if not self._warned:
                log.warning("systemd notification not sent: %s", err)
                self._warned = True

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text[:STATUS_MAX_CHARS]}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _address(name: str) -> str | bytes | None:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()  # the abstract namespace
    if name.startswith("/"):
        return name
    return None
