"""One TCP connection to an LED controller, with request/answer exchanges like a bus link's.

TCP delivers or fails, so an attempt is never repeated on the same connection; an answer that
does not come in time drops the connection, so a late answer can never pass for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final, TypeVar

from gateway.codec import Decoder, scan
from gateway.errors import BadFrame, DeviceError, DeviceIOError, DeviceTimeout
from gateway.serialbus import AttemptCounter

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F")

# a controller on the hall's LAN accepts within milliseconds; this covers a busy switch
CONNECT_TIMEOUT_S: Final = 3.0
# devices.md: an LED controller answers every command within 1 s
ANSWER_TIMEOUT_S: Final = 1.0
# closing waits this long for the peer; a controller that vanished must not hold shutdown
CLOSE_TIMEOUT_S: Final = 1.0
_READ_CHUNK: Final = 4096


class TcpLink:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._rx = bytearray()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as err:
            raise DeviceTimeout(f"no connection to {self.address}", reconnect=True) from err
        except OSError as err:
            raise DeviceIOError(f"cannot connect to {self.address}: {err}") from err
        self._rx.clear()

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await writer.wait_closed()

    async def exchange(
        self,
        request: bytes,
        decode: Decoder[F],
        match: Callable[[F], T | None],
        count: AttemptCounter,
        *,
        retries: int | None = None,  # one attempt: TCP retransmits by itself
        timeout_s: float | None = None,
    ) -> T:
        """Send `request`; return `match(frame)` for the first frame it does not return None for."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            answer = await self._attempt(
                request, decode, match, started + (timeout_s or ANSWER_TIMEOUT_S)
            )
        except DeviceError as err:
            count(err.result, loop.time() - started)
            if err.reconnect:
                self._drop()
            raise
        except BaseException:
            self._drop()  # cancelled halfway: the stream is out of step with the requests
            raise
        count("ok", loop.time() - started)
        return answer

    async def _attempt(
        self, request: bytes, decode: Decoder[F], match: Callable[[F], T | None], deadline: float
    ) -> T:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or writer.is_closing():
            raise DeviceIOError(f"not connected to {self.address}")
        self._rx.clear()
        try:
            writer.write(request)
            async with asyncio.timeout_at(deadline):
                await writer.drain()
        except TimeoutError as err:
            raise DeviceTimeout(f"{self.address} takes no data", reconnect=True) from err
        except OSError as err:
            raise DeviceIOError(f"cannot send to {self.address}: {err}") from err
        while True:
            answer, bad = scan(self._rx, decode, match)
            if answer is not None:
                return answer
            if bad:
                raise BadFrame(f"{len(bad)} bad frame(s) from {self.address}: {bad[0]}")
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(_READ_CHUNK)
            except TimeoutError as err:
                raise DeviceTimeout(f"no answer from {self.address}", reconnect=True) from err
            except OSError as err:
                raise DeviceIOError(f"lost {self.address}: {err}") from err
            if not data:
                raise DeviceIOError(f"{self.address} closed the connection")
            self._rx += data

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._reader = None
