"""Modbus TCP to a queue controller: pymodbus's async client, its errors translated once, here.

The gateway owns the link's life, not pymodbus: the client never reconnects or retries on its
own (`reconnect_delay=0`, `retries=0`) and keeps no timer of its own (`timeout=None`: it then
awaits its answer plainly). Every read must be answered within `timeout_s` of its start; one
watchdog timer per link enforces that (see `TcpLink._watch`), and a connection the controller
drops fails the read in flight at once instead of at its deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
# timeouts in a row after which the connection counts as half-open and is opened again
TIMEOUTS_BEFORE_RECONNECT: Final = FAILURES_BEFORE_OFFLINE

Counter = Callable[[RequestResult, float | None], None]


@dataclass(slots=True)
class _InFlight:
    """The read awaiting its answer: whose task, by when, and whether the watchdog ended it."""

    task: asyncio.Task[Any]
    deadline: float
    cancelling: int  # the task's pending cancellations when the read began
    expired: bool = False


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
        self._in_flight: _InFlight | None = None
        self._watchdog: asyncio.TimerHandle | None = None
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
            timeout=None,  # type: ignore[arg-type]  # handed to asyncio.wait_for: no timer
            trace_connect=self._on_connection,
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                connected = bool(await client.connect())
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
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def read(self, request: Read, decode: Callable[[Sequence[int]], R]) -> R:
        """Read `request` and return `decode(registers)`; raise DeviceError, counted, on failure."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = self._client
        if client is None or not client.connected:
            raise self._failed(DeviceIOError(f"{self._name}: not connected"), started)
        task = asyncio.current_task()
        assert task is not None  # reads run in the device's task
        flight = self._in_flight = _InFlight(task, started + self.timeout_s, task.cancelling())
        watchdog = self._watchdog
        if watchdog is None or flight.deadline < watchdog.when():  # (a shorter timeout_s)
            self._arm(flight.deadline)
        try:
            answer = await client.read_holding_registers(
                request.address, count=request.count, device_id=self.unit
            )
        except asyncio.CancelledError as err:
            # the watchdog's own cancellation is a timeout, unless the task was also cancelled
            # from outside (the gateway stopping it): that one goes on (as asyncio.timeout does)
            if not flight.expired or task.uncancel() > flight.cancelling:
                raise
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

    def _arm(self, deadline: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_at(deadline, self._watch)

    def _watch(self) -> None:
        """The watchdog's turn: end the read in flight if its deadline has come, else wait for
        that deadline. A poll's reads share this one timer, armed again only when it fires
        (about once per `timeout_s` while polling), not a timer set up and torn down per read."""
        self._watchdog = None
        flight = self._in_flight
        if flight is None:
            return  # between reads: the next read arms it
        if flight.deadline <= asyncio.get_running_loop().time():
            self._expire(flight)
        else:
            self._arm(flight.deadline)

    def _on_connection(self, connected: bool) -> None:  # noqa: FBT001  # pymodbus's callback
        flight = self._in_flight
        if not connected and flight is not None:
            # the controller closed the connection: fail the read in flight now
            self._expire(flight)

    @staticmethod
    def _expire(flight: _InFlight) -> None:
        if not flight.expired:
            flight.expired = True
            flight.task.cancel()


def _exception_name(answer: object) -> str:
    code = int(getattr(answer, "exception_code", 0))
    try:
        return f"{code} ({ExcCodes(code).name.lower()})"
    except ValueError:
        return str(code)
