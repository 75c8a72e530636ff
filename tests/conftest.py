"""Fixtures shared by the suite: a real broker per test, a pad bus and a kiosk agent, and the
checks every test gets."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from simulators.ff68_pad import PadBus, SimPad
from simulators.kiosk_http import KioskAgent
from tests.support.harness import GatewayProcess
from tests.support.mosquitto import Mosquitto

# a callback that holds the loop this long is a blocking call in the loop: the test fails
SLOW_CALLBACK_S = 1.0


@pytest.fixture(autouse=True)
def _no_gateway_left_running() -> Iterator[None]:
    """A test that fails before stopping its gateway process does not leave it behind."""
    yield
    GatewayProcess.kill_leftovers()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    await mosquitto.start()
    try:
        yield mosquitto
    finally:
        await mosquitto.stop()


@pytest.fixture
async def padbus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PadBus]:
    """Simulated pads 1…N on a pty at `tmp_path/pads-1f`; N is the test module's `PADS`, or 2."""
    pads = int(getattr(request.module, "PADS", 2))
    bus = PadBus([SimPad(n) for n in range(1, pads + 1)])
    await bus.open_pty(tmp_path / "pads-1f")
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def agent() -> AsyncIterator[KioskAgent]:
    """A simulated kiosk agent, K01, serving on a free loopback port."""
    kiosk = KioskAgent("K01")
    await kiosk.start()
    try:
        yield kiosk
    finally:
        await kiosk.crash()


class _LoopBlocked(logging.Handler):
    """Collects what the event loop reports: callbacks that blocked it, and errors it caught
    (an exception in a callback, a task's exception nobody retrieved)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if (message.startswith("Executing ") and " took " in message) or (
            record.levelno >= logging.ERROR
        ):
            self.records.append(message)


@pytest.fixture(autouse=True)
def _loop_stays_responsive() -> Iterator[None]:
    """asyncio's debug mode reports callbacks that block the loop; any such report fails."""
    handler = _LoopBlocked()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, f"the event loop reported: {handler.records}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.function):
            item.fixturenames.insert(0, "_no_leaked_tasks")


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Async tests fail on tasks left running and on callbacks that block the loop."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)  # let finished tasks finish being done
    leaked = [
        t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks left running: {[t.get_name() for t in leaked]}"
