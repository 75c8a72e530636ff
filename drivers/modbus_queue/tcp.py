"""Modbus TCP to a queue controller: pymodbus's async client, its errors translated once, here.

The gateway owns the link's life, not pymodbus: the client never reconnects or retries on its
own (`reconnect_delay=0`, `retries=0`), every read runs under our own `asyncio.timeout`, and a
connection the controller drops fails the read in flight at once instead of at its timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException

from drivers.modbus_queue.registers import MapError, Read
from gateway.errors import (
    BadResponse,
    DeviceError,
    DeviceIOError,
    DeviceTimeout,
    RequestResult,
)
from gateway.runner import FAILURES_BEFORE_OFFLINE

log = logging.getLogger(__name__)

R = TypeVar("R")

# opening a TCP connection to a controller on the hall's LAN
CONNECT_TIMEOUT_S: Final = 3.0
# pymodbus keeps a timeout of its own; it waits this much longer, so ours always fires first
PYMODBUS_TIMEOUT_MARGIN_S: Final = 1.0
# timeouts in a row after which the connection counts as half-open and is opened again
TIMEOUTS_BEFORE_RECONNECT: Final = FAILURES_BEFORE_OFFLINE

Counter = Callable[[RequestResult, float | None], None]


class TcpLink:
    """One TCP connection to one unit, reading holding registers."""

    def __init__(
        self,
        host: str,
        port: int,
        unit: int,
        *,
        timeout_s: float,
        count: Counter,
        name: str,
    ) -> None:
        self.host = host
        self.port = port
        self.unit = unit
        self.timeout_s = timeout_s
        self._count = count
        self._name = name
        self._client: AsyncModbusTcpClient | None = None
        self._in_flight: asyncio.Timeout | None = None
        self._timeouts = 0

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            name=self._name,
            reconnect_delay=0,
            retries=0,
            timeout=max(CONNECT_TIMEOUT_S, self.timeout_s) + PYMODBUS_TIMEOUT_MARGIN_S,
            trace_connect=self._on_connection,
        )
        mark = cancel_mark()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                connected = bool(await client.connect())
                deliver_lost_cancel(mark)
        except TimeoutError:
            connected = False
        except asyncio.CancelledError:
            client.close()
            raise
        if not connected:
            client.close()
            self._count("io_error", loop.time() - started)
            raise DeviceIOError(f"cannot connect to {self.host}:{self.port}")
        self._client = client
        self._timeouts = 0

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self, request: Read, decode: Callable[[Sequence[int]], R]) -> R:
        """Read `request` and return `decode(registers)`; raise DeviceError, counted, on failure."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = self._client
        if client is None or not client.connected:
            raise self._failed(DeviceIOError(f"{self._name}: not connected"), started)
        mark = cancel_mark()
        try:
            async with asyncio.timeout(self.timeout_s) as scope:
                self._in_flight = scope
                answer = await client.read_holding_registers(
                    request.address, count=request.count, device_id=self.unit
                )
                deliver_lost_cancel(mark)
        except TimeoutError as err:
            if not client.connected:
                closed = DeviceIOError(f"{self._name}: connection closed by the controller")
                raise self._failed(closed, started) from err
            self._timeouts += 1
            timeout = DeviceTimeout(
                f"{self._name}: no answer within {self.timeout_s} s",
                reconnect=self._timeouts >= TIMEOUTS_BEFORE_RECONNECT,
            )
            raise self._failed(timeout, started) from err
        except ConnectionException as err:
            raise self._failed(DeviceIOError(f"{self._name}: {err}"), started) from err
        except ModbusException as err:  # an answer for another unit or transaction
            raise self._failed(BadResponse(f"{self._name}: {err}"), started) from err
        except OSError as err:
            raise self._failed(DeviceIOError(f"{self._name}: {err}"), started) from err
        finally:
            self._in_flight = None
        self._timeouts = 0
        if answer.isError():
            name = _exception_name(answer)
            raise self._failed(BadResponse(f"{self._name}: exception response {name}"), started)
        registers: Sequence[int] = answer.registers
        if len(registers) != request.count:
            short = f"{self._name}: {len(registers)} registers for a read of {request.count}"
            raise self._failed(BadResponse(short), started)
        try:
            result = decode(registers)
        except MapError as err:
            raise self._failed(BadResponse(f"{self._name}: {err}"), started) from err
        self._count("ok", loop.time() - started)
        return result

    def _failed(self, err: DeviceError, started: float) -> DeviceError:
        """Count a failed request; return its error to raise."""
        self._count(err.result, asyncio.get_running_loop().time() - started)
        return err

    def _on_connection(self, connected: bool) -> None:  # noqa: FBT001  # pymodbus's callback
        if not connected and self._in_flight is not None:
            # the controller closed the connection: fail the read in flight now
            self._in_flight.reschedule(asyncio.get_running_loop().time())


CancelMark = tuple["asyncio.Task[Any] | None", int]


def cancel_mark() -> CancelMark:
    """The current task and the cancellations requested of it so far, before an await."""
    task = asyncio.current_task()
    return task, 0 if task is None else task.cancelling()


def deliver_lost_cancel(mark: CancelMark) -> None:
    """Raise the cancellation pymodbus may have dropped since `mark`.

    pymodbus awaits `asyncio.wait_for`, which on Python 3.11 returns a result that arrived in
    the same loop iteration as a cancellation and drops the cancellation (fixed in 3.12): the
    device's task would poll on after the gateway cancelled it. Inside our own timeout, this
    also turns our own timeout's dropped cancellation back into a TimeoutError.
    """
    task, before = mark
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


def _exception_name(answer: object) -> str:
    code = int(getattr(answer, "exception_code", 0))
    try:
        return f"{code} ({ExcCodes(code).name.lower()})"
    except ValueError:
        return str(code)
