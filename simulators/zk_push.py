"""Simulated ZKTeco punch clocks speaking the `zk_push` protocol to a gateway over real HTTP.

Built on the driver's own codec. Each clock behaves like firmware: it asks for its options
(handshake), sets its clock from the answer's `Date` (unless told not to), pushes punches at
once in realtime mode, heartbeats every `Delay` seconds, runs the commands it is given, keeps
every record until an upload of it is answered `OK`, and after a failure waits `ErrorDelay` and
starts again with a handshake. Faults: a clock that is off by some seconds and drifts, a clock
that adds malformed lines to its bodies, an operator log.

    python -m simulators.zk_push --url http://127.0.0.1:8081 --sn CK1,CK2 --pins 1001-1050 \\
        --random 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from email.utils import parsedate_to_datetime
from typing import Final
from zoneinfo import ZoneInfo

import aiohttp

from drivers.zk_push import codec
from drivers.zk_push.codec import AttRecord

log = logging.getLogger(__name__)

# firmware waits about this long for an answer before it counts the exchange as failed
REQUEST_TIMEOUT_S: Final = 10.0
# what a clock uses until its first handshake tells it otherwise (the protocol's defaults)
DEFAULT_DELAY_S: Final = 10.0
DEFAULT_ERROR_DELAY_S: Final = 30.0
# records per upload; firmware sends its backlog in bodies of about this many lines
DEFAULT_BATCH: Final = 100
PUSH_VERSION: Final = "2.4.1"
FIRMWARE: Final = "Ver 8.0.4.2-20191015"
MALFORMED_LINE: Final = "BAD\t2026-13-45 99:99:99\tx"

TimeSource = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ClockRefused(Exception):
    """The gateway answered something other than the protocol's success."""


class SimClock:
    """One clock. `async with SimClock(...) as clock:` runs it; `punch()` makes a record."""

    def __init__(
        self,
        sn: str,
        base_url: str,
        *,
        zone: ZoneInfo | str = "Asia/Shanghai",
        time_source: TimeSource = _utc_now,
        offset_s: float = 0.0,
        drift_ppm: float = 0.0,
        sync_time: bool = True,
        malformed: bool = False,
        batch: int = DEFAULT_BATCH,
        error_delay_s: float | None = None,
        users: int = 50,
    ) -> None:
        self.sn = sn
        self.base_url = base_url.rstrip("/")
        self.zone = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
        self.time_source = time_source
        self.offset_s = offset_s
        self.drift_ppm = drift_ppm
        self.sync_time = sync_time
        self.malformed = malformed
        self.batch = batch
        self.users = users
        self.options: dict[str, str] = {}
        self.delay_s = DEFAULT_DELAY_S
        self.error_delay_s = error_delay_s or DEFAULT_ERROR_DELAY_S
        self._fixed_error_delay = error_delay_s is not None
        self.realtime = True
        self.pending: deque[AttRecord] = deque()
        self.oplog: deque[str] = deque()
        self.acknowledged: list[AttRecord] = []
        self.commands: list[tuple[int, str]] = []
        self.ok_counts: list[int] = []
        self.handshakes = 0
        self.heartbeats = 0
        self.uploads = 0
        self.failures = 0
        self.malformed_sent = 0
        self.last_error: str | None = None
        self._drift_origin = time_source()
        self._stamp = 0
        self._results: list[str] = []
        self._connected = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SimClock:
        self._task = asyncio.create_task(self.run(), name=f"sim-clock-{self.sn}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def now(self) -> dt.datetime:
        """The clock's own time: naive, local to its zone, off by its offset and drift."""
        true = self.time_source()
        drift = (true - self._drift_origin).total_seconds() * self.drift_ppm / 1e6
        local = (true + dt.timedelta(seconds=self.offset_s + drift)).astimezone(self.zone)
        return local.replace(tzinfo=None, microsecond=0)

    def punch(
        self, pin: str, *, at: dt.datetime | None = None, status: int = 0, verify: int = 1
    ) -> AttRecord:
        """Someone punches; `at` (naive, the clock's zone) stamps it instead of the clock."""
        record = AttRecord(pin, (at or self.now()).replace(microsecond=0), status, verify, "0")
        self.pending.append(record)
        self._idle.clear()
        self._wake.set()
        return record

    def add_records(self, records: Iterable[AttRecord]) -> None:
        """Records the clock already holds (a backlog), uploaded at its next chance."""
        self.pending.extend(records)
        if self.pending:
            self._idle.clear()
            self._wake.set()

    def operate(self, line: str) -> None:
        """An operator did something at the clock: a line for the operation log."""
        self.oplog.append(line)
        self._idle.clear()
        self._wake.set()

    def oplog_line(self, code: int = 4, admin: str = "0") -> str:
        return f"OPLOG {code}\t{admin}\t{self.now().strftime(codec.TIME_FORMAT)}\t0\t0\t0\t0"

    def set_time(self, server_time: dt.datetime) -> None:
        """Set the clock (firmware does so from a handshake's `Date`); it drifts on from here."""
        true = self.time_source()
        self.offset_s = (server_time - true).total_seconds()
        self._drift_origin = true

    async def flushed(self) -> None:
        """Wait until every record and log line has been acknowledged (callers bound it)."""
        await self._idle.wait()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            loop = asyncio.get_running_loop()
            next_beat = loop.time()
            while True:
                try:
                    if not self._connected:
                        await self._handshake(session)
                        next_beat = loop.time()
                    if self.realtime or loop.time() >= next_beat:
                        await self._upload_all(session)
                    if loop.time() >= next_beat:
                        await self._heartbeat(session)
                        next_beat = loop.time() + self.delay_s
                except (aiohttp.ClientError, TimeoutError, ClockRefused, codec.BodyError) as err:
                    self.failures += 1
                    self.last_error = f"{type(err).__name__}: {err}"
                    self._connected = False
                    log.debug(
                        "%s: %s; retrying in %.1f s", self.sn, self.last_error, self.error_delay_s
                    )
                    await asyncio.sleep(self.error_delay_s)
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_beat - loop.time())):
                        await self._wake.wait()

    async def run_random(self, pins: Sequence[str], *, punches_per_min: float) -> None:
        """Random punches for the demo, now and then an operator log line."""
        while True:
            await asyncio.sleep(random.expovariate(punches_per_min / 60.0))
            if random.random() < 0.02:
                self.operate(self.oplog_line())
            else:
                self.punch(random.choice(pins), verify=random.choice([1, 1, 1, 15, 2]))

    async def _handshake(self, session: aiohttp.ClientSession) -> None:
        params = {"SN": self.sn, "options": "all", "pushver": PUSH_VERSION, "language": "69"}
        async with session.get(f"{self.base_url}/iclock/cdata", params=params) as resp:
            text = await resp.text()
            self._check(resp, text)
            date = resp.headers.get("Date")
        sn, options = codec.parse_handshake(text)
        if sn != self.sn:
            raise ClockRefused(f"handshake answered for {sn}")
        self.options = options
        self.delay_s = float(options.get("Delay", DEFAULT_DELAY_S))
        if not self._fixed_error_delay:
            self.error_delay_s = float(options.get("ErrorDelay", DEFAULT_ERROR_DELAY_S))
        self.realtime = options.get("Realtime", "1") == "1"
        if self.sync_time and date:
            self.set_time(parsedate_to_datetime(date))
        self.handshakes += 1
        self._connected = True

    async def _upload_all(self, session: aiohttp.ClientSession) -> None:
        while self.pending:
            batch = list(self.pending)[: self.batch]
            body = codec.att_body(batch)
            if self.malformed:
                body = MALFORMED_LINE + "\n" + body
                self.malformed_sent += 1
            count = await self._post(session, codec.ATTLOG, body)
            self.ok_counts.append(count)
            for _ in batch:
                self.acknowledged.append(self.pending.popleft())
        if self.oplog:
            lines = list(self.oplog)
            await self._post(session, codec.OPERLOG, "".join(line + "\n" for line in lines))
            for _ in lines:
                self.oplog.popleft()
        if not self.pending and not self.oplog:
            self._idle.set()

    async def _post(self, session: aiohttp.ClientSession, table: str, body: str) -> int:
        self._stamp += 1
        params = {"SN": self.sn, "table": table, "Stamp": str(self._stamp)}
        self.uploads += 1
        async with session.post(
            f"{self.base_url}/iclock/cdata", params=params, data=body.encode("utf-8")
        ) as resp:
            text = await resp.text()
            self._check(resp, text)
        count = codec.parse_ok(text)
        if count is None:
            raise ClockRefused(f"upload answered {text[:40]!r}")
        return count

    async def _heartbeat(self, session: aiohttp.ClientSession) -> None:
        info = f"{FIRMWARE},{self.users},{self.users},{len(self.acknowledged)},127.0.0.1"
        params = {"SN": self.sn, "INFO": info}
        async with session.get(f"{self.base_url}/iclock/getrequest", params=params) as resp:
            text = await resp.text()
            self._check(resp, text)
        self.heartbeats += 1
        for command_id, command in codec.parse_commands(text):
            self.commands.append((command_id, command))
            self._results.append(self._execute(command_id, command))
        if self._results:
            body = "".join(line + "\n" for line in self._results)
            async with session.post(
                f"{self.base_url}/iclock/devicecmd",
                params={"SN": self.sn},
                data=body.encode("utf-8"),
            ) as resp:
                text = await resp.text()
                self._check(resp, text)
            self._results.clear()

    def _execute(self, command_id: int, command: str) -> str:
        line = codec.result_line(command_id, 0, command)
        if command == "INFO":
            details = [
                f"~DeviceName=SIM-{self.sn}",
                f"FWVersion={FIRMWARE}",
                f"UserCount={self.users}",
            ]
            return "\n".join([line, *details])
        if command == "CHECK":
            self._wake.set()
        elif command.startswith("REBOOT"):
            self._connected = False
        return line

    @staticmethod
    def _check(resp: aiohttp.ClientResponse, text: str) -> None:
        if resp.status != 200:
            raise ClockRefused(f"HTTP {resp.status}: {text[:80]}")


@contextlib.asynccontextmanager
async def running(clocks: Sequence[SimClock]) -> AsyncIterator[Sequence[SimClock]]:
    """Run several clocks at once."""
    async with contextlib.AsyncExitStack() as stack:
        for clock in clocks:
            await stack.enter_async_context(clock)
        yield clocks


def parse_pins(text: str) -> list[str]:
    """`1001-1050,2001` → ['1001', …, '1050', '2001']."""
    pins: list[str] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        pins.extend(str(n) for n in range(int(low), int(high or low) + 1))
    return pins


async def _main(args: argparse.Namespace) -> None:
    clocks = [
        SimClock(
            sn, args.url, offset_s=args.offset, sync_time=not args.no_sync, malformed=args.malformed
        )
        for sn in args.sn.split(",")
    ]
    pins = parse_pins(args.pins)
    async with running(clocks), asyncio.TaskGroup() as group:
        for clock in clocks:
            group.create_task(
                clock.run_random(pins, punches_per_min=args.random), name=f"random-{clock.sn}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081", help="the device listener")
    parser.add_argument("--sn", default="CK0001", help="serial numbers, comma-separated")
    parser.add_argument("--pins", default="1001-1010", help="PINs that punch, e.g. 1001-1050")
    parser.add_argument("--random", type=float, default=2.0, help="punches per clock per minute")
    parser.add_argument("--offset", type=float, default=0.0, help="seconds the clocks are off")
    parser.add_argument("--no-sync", action="store_true", help="ignore the server's Date")
    parser.add_argument("--malformed", action="store_true", help="add a bad line to every body")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
