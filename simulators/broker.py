"""A private Mosquitto on a free loopback port, for the demo hall and the tests.

The gateway itself never starts a broker in production: it talks to the hall's own Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# a broker that does not accept connections this long after start has failed to start
START_TIMEOUT_S: Final = 10.0


def find_program(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(f"{name} is not installed; the README's commands install it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """`await broker.start()`, `await broker.stop()`, `await broker.restart()`."""

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        persistence: bool = False,
        acl: str | None = None,
        config_file: Path | None = None,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.users = users
        self.tls = tls
        self.persistence = persistence
        self.acl = acl
        self.config_file = config_file
        self.log = directory / "mosquitto.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            # as root, mosquitto would drop to its own user, who cannot read pytest's tmp dirs
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
        ]
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            passwords = self.directory / "passwords"
            passwords.write_text("")  # mosquitto_passwd fills it when the broker starts
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        if self.acl is not None:
            acl_file = self.directory / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    async def start(self) -> None:
        config = self.config_file or self.write_config()
        if self.users is not None and self.config_file is None:
            await self._write_passwords(self.directory / "passwords")
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                find_program("mosquitto"),
                "-c",
                str(config),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                # its own session: a Ctrl-C meant for the demo must not kill the broker before
                # the gateway has said goodbye through it
                start_new_session=True,
            )
        await self._wait_listening()

    async def stop(self) -> None:
        if self._process is None:
            return
        if self._process.returncode is None:
            self._process.terminate()
            try:
                async with asyncio.timeout(5):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _write_passwords(self, path: Path) -> None:
        for user, password in (self.users or {}).items():
            process = await asyncio.create_subprocess_exec(
                find_program("mosquitto_passwd"),
                "-b",
                str(path),
                user,
                password,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, errors = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"mosquitto_passwd failed: {errors.decode(errors='replace')}")

    async def _wait_listening(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text(errors='replace')}")
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            if loop.time() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port}")
            await asyncio.sleep(0.02)
