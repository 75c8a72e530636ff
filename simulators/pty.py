"""A pty standing in for a serial port, for the simulators of serial devices.

The simulator holds the master end (raw, non-blocking, read by the event loop); the gateway
opens the slave end by its path, or by a symlink to it that plays a `/dev/serial/by-id/…` link,
so that a port can vanish and come back under a new pty behind the same link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from pathlib import Path


class SimPty:
    def __init__(self, link: Path | None, on_readable: Callable[[], None]) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no line discipline: every byte value must pass untouched
        os.set_blocking(master, False)
        self._master: int | None = master
        self._slave: int | None = slave  # held open, so that the gateway closing it is no hang-up
        self.path = os.ttyname(slave)
        self.link = link
        asyncio.get_running_loop().add_reader(master, on_readable)
        if link is not None:
            tmp = link.with_name(link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.path)
            tmp.replace(link)  # atomic: the link never dangles while it moves

    @property
    def name(self) -> str:
        """What the gateway's config names: the link if there is one, else the pty itself."""
        return str(self.link) if self.link is not None else self.path

    def read(self) -> bytes:
        """What the gateway has written; b"" when nothing is waiting or the pty is closed."""
        if self._master is None:
            return b""
        try:
            return os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, data)

    def close(self) -> None:
        """The port vanishes: both ends close and the link goes."""
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()


def parse_addresses(text: str) -> list[int]:
    """The addresses of the devices sharing one line, as a simulator's command line gives them:
    `1-8,12` → [1, …, 8, 12]."""
    addresses: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        addresses.extend(range(int(low), int(high or low) + 1))
    return addresses
