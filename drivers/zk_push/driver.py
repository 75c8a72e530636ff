"""ZKTeco PUSH punch clocks (devices.md §1). The clocks are HTTP clients: they call the device
listener's `/iclock/…` endpoints, which all clocks share, and are told apart by `SN`.

An upload is answered `OK: n` only after its records are committed; a clock that never saw the
`OK` sends them again and gets the same event ids, which the journal already holds, so nothing
is published twice. Records whose time is too far from the gateway's, or whose status the
profile does not map, are journaled with a flag and not published: the journal keeps what the
clock said, MQTT carries only what the gateway trusts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import ClassVar, Final, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import Counter, Gauge

from drivers.zk_push import codec
from drivers.zk_push.config import ZkPushConfig
from gateway.attendance import FLAG_IMPLAUSIBLE, AttendanceEngine, AttendanceRules, Punch
from gateway.bus import journal_entry
from gateway.clock import iso
from gateway.context import DriverContext, Mounted
from gateway.errors import RequestResult, StoreError
from gateway.events import PunchEvent, VerifyMode
from gateway.http import MAX_BODY_BYTES
from gateway.ids import stable_id
from gateway.runner import DeviceRunner
from gateway.store import JournalEntry

log = logging.getLogger(__name__)

KIND: Final = "punch_clock"
# devices.md: a clock is offline when it has sent nothing for 3 times Delay seconds
SILENT_DELAYS_BEFORE_OFFLINE: Final = 3
# clocks give up on an answer after some 10 to 30 s and send again; fail before they do
STORE_TIMEOUT_S: Final = 10.0
# a realtime push carries the punch just made; a larger body is a backlog, whose times say
# nothing about the clock's own clock
SKEW_SAMPLE_MAX_RECORDS: Final = 3
# the skew is the largest sample of the last hour: transit delays only make samples smaller
SKEW_WINDOW_S: Final = 3600.0
# unknown serial numbers remembered for logging once each; a scan of the network stays bounded
UNKNOWN_SN_LOGGED_MAX: Final = 100
FLAG_UNMAPPED: Final = "unmapped_status"
# records normalized and committed per step, so a 1 MiB body never holds the loop for long
RECORDS_PER_STEP: Final = 500
# a body up to this size parses in well under a millisecond; larger ones go to a thread
PARSE_INLINE_MAX_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """What a clock is told, and how the exchange counts in `hallgw_device_requests_total`."""

    status: int
    text: str
    result: RequestResult = "ok"


# the store could not commit: the clock keeps its records and sends them again after ErrorDelay
STORE_UNAVAILABLE: Final = Answer(503, "store unavailable", "io_error")


@dataclass(frozen=True)
class QueuedCommand:
    id: int
    command: str
    result: asyncio.Future[codec.CommandResult]


class PushServer:
    """The `/iclock` endpoints of every punch clock of one gateway, and their attendance engine."""

    # fault injection for tests: runs after an upload is committed and before it is answered
    fault_after_commit: ClassVar[Callable[[], None] | None] = None

    def __init__(self, context: DriverContext) -> None:
        self.clocks: dict[str, ClockDriver] = {}
        self._context = context
        self._unknown_logged: set[str] = set()
        registry = context.metrics.registry
        self.metrics = _Metrics(
            lines=Counter(
                "hallgw_punch_clock_lines_total",
                "Lines uploaded by punch clocks, by table and what became of them",
                ["device_id", "table", "result"],
                registry=registry,
            ),
            unknown_pins=Counter(
                "hallgw_punch_unknown_pin_total",
                "Punches whose PIN is not on the roster (published with staff_id null)",
                ["device_id"],
                registry=registry,
            ),
            skew=Gauge(
                "hallgw_punch_clock_skew_seconds",
                "How far a punch clock's clock is ahead of the gateway's (negative: behind)",
                ["device_id"],
                registry=registry,
            ),
        )
        self.engine = AttendanceEngine(
            AttendanceRules(context.config),
            roster=context.roster,
            clock=context.clock,
            bus=context.bus,
            store=context.store,
            contacts=lambda: [clock.last_contact for clock in self.clocks.values()],
        )

    def add(self, driver: ClockDriver) -> None:
        self.clocks[driver.config.serial_number] = driver

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/iclock/cdata", self._cdata_get)
        router.add_post("/iclock/cdata", self._cdata_post)
        router.add_get("/iclock/getrequest", self._getrequest)
        router.add_post("/iclock/devicecmd", self._devicecmd)

    async def _cdata_get(self, request: web.Request) -> web.Response:
        clock = self._clock_for(request)
        if clock is None:
            return self._refused(request)
        return self._answer(clock.exchange(clock.handshake))

    async def _cdata_post(self, request: web.Request) -> web.Response:
        clock = self._clock_for(request)
        if clock is None:
            return self._refused(request)
        body = await self._body(request, clock)
        if isinstance(body, web.Response):
            return body
        table = request.query.get("table", "")
        return self._answer(await clock.exchange_async(clock.upload(table, body)))

    async def _getrequest(self, request: web.Request) -> web.Response:
        clock = self._clock_for(request)
        if clock is None:
            return self._refused(request)
        return self._answer(
            clock.exchange(functools.partial(clock.heartbeat, request.query.get("INFO")))
        )

    async def _devicecmd(self, request: web.Request) -> web.Response:
        clock = self._clock_for(request)
        if clock is None:
            return self._refused(request)
        body = await self._body(request, clock)
        if isinstance(body, web.Response):
            return body
        return self._answer(await clock.exchange_async(clock.command_results(body)))

    def _clock_for(self, request: web.Request) -> ClockDriver | None:
        return self.clocks.get(request.query.get("SN", ""))

    def _refused(self, request: web.Request) -> web.Response:
        sn = request.query.get("SN", "")
        self._context.metrics.device_requests.labels("unknown", KIND, "unknown_device").inc()
        if sn not in self._unknown_logged and len(self._unknown_logged) < UNKNOWN_SN_LOGGED_MAX:
            self._unknown_logged.add(sn)
            log.warning(
                "refused %s %s from %s: serial number %r is not in config",
                request.method,
                request.path,
                request.remote,
                sn[:64],
            )
        return self._answer(Answer(403, "unknown device", "unknown_device"))

    async def _body(self, request: web.Request, clock: ClockDriver) -> bytes | web.Response:
        too_large = Answer(413, f"body over {MAX_BODY_BYTES} bytes", "bad_frame")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            clock.refused_body("too large")
            return self._answer(too_large)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            clock.refused_body("too large")
            return self._answer(too_large)

    def _answer(self, answer: Answer) -> web.Response:
        response = web.Response(status=answer.status, text=answer.text, content_type="text/plain")
        # devices.md: clocks set their time from it, so it is the hall clock's, every time
        response.headers["Date"] = formatdate(self._context.clock.timestamp(), usegmt=True)
        return response


# the shared server lives on the device listener's app, so clocks mounted later find it
SERVER_KEY: Final = web.AppKey("zk_push_server", PushServer)


class ClockDriver:
    """One punch clock: what its requests mean, its commands, its skew and its availability."""

    def __init__(
        self,
        config: ZkPushConfig,
        context: DriverContext,
        runner: DeviceRunner,
        server: PushServer,
    ) -> None:
        self.config = config
        self.runner = runner
        self.zone = ZoneInfo(config.timezone) if config.timezone else context.config.zone
        self.last_contact: dt.datetime | None = None
        self._context = context
        self._server = server
        self._metrics = server.metrics
        self._next_command_id = 1
        self._queued: deque[tuple[int, str]] = deque()
        self._waiting: dict[int, QueuedCommand] = {}
        self._run = iso(context.clock.now())  # command ids restart with every run
        self._skew_samples: deque[tuple[float, float]] = deque()
        self._warned_tables: set[str] = set()

    @property
    def device_id(self) -> str:
        return self.config.id

    async def restore(self) -> None:
        self._context.hub.update_values(
            self.device_id,
            {"serial_number": self.config.serial_number, "timezone": str(self.zone)},
        )

    async def watch(self) -> None:
        """Mark the clock offline whenever it stays silent for 3 times Delay; until cancelled."""
        await self.runner.expect_contact_every(SILENT_DELAYS_BEFORE_OFFLINE * self.config.delay_s)

    async def close(self) -> None:
        for queued in self._waiting.values():
            queued.result.cancel()
        self._waiting.clear()

    def queue_command(self, command: str) -> QueuedCommand:
        """Queue a command for the clock's next heartbeat; await `.result` for its outcome."""
        queued = QueuedCommand(
            self._next_command_id,
            codec.check_command(command),
            asyncio.get_running_loop().create_future(),
        )
        self._next_command_id += 1
        self._queued.append((queued.id, queued.command))
        self._waiting[queued.id] = queued
        return queued

    def exchange(self, handle: Callable[[], Answer]) -> Answer:
        started = time.monotonic()
        self.contact()
        answer = handle()
        self._count(answer, started)
        return answer

    async def exchange_async(self, work: Awaitable[Answer]) -> Answer:
        started = time.monotonic()
        self.contact()
        answer = await work
        self._count(answer, started)
        return answer

    def contact(self) -> None:
        self.last_contact = self._context.clock.now()
        self.runner.contact()
        if self._server.engine.holding:
            self._server.engine.wake()  # it waits to hear from every clock before settling

    def refused_body(self, why: str) -> None:
        self.contact()
        self.runner.count_request("bad_frame")
        log.warning("%s: body refused: %s", self.device_id, why)

    def handshake(self) -> Answer:
        offset = self._context.clock.now().astimezone(self.zone).utcoffset() or dt.timedelta()
        options = codec.HandshakeOptions(
            error_delay_s=self.config.error_delay_s,
            delay_s=self.config.delay_s,
            trans_times=self.config.trans_times,
            trans_interval=self.config.trans_interval,
            trans_flag=self.config.trans_flag,
            timezone_hours=offset.total_seconds() / 3600,
            realtime=self.config.realtime,
        )
        return Answer(200, codec.handshake(self.config.serial_number, options))

    async def upload(self, table: str, body: bytes) -> Answer:
        text = await _parse(codec.decode_text, body)
        if table == codec.ATTLOG:
            return await self._attlog(text)
        if table == codec.OPERLOG:
            return await self._operlog(text)
        if not table:
            return Answer(400, "table is required", "bad_frame")
        lines = [line for line in text.splitlines() if line.strip()]
        self._metrics.lines.labels(self.device_id, table[:32], "ignored").inc(len(lines))
        if table not in self._warned_tables and len(self._warned_tables) < 16:
            self._warned_tables.add(table)
            log.warning(
                "%s: uploads of table %r are acknowledged and dropped", self.device_id, table[:32]
            )
        return Answer(200, codec.ok(len(lines)))

    def heartbeat(self, info: str | None) -> Answer:
        if info:
            try:
                parsed = codec.parse_info(info)
            except codec.BodyError as err:
                log.debug("%s: INFO not understood: %s", self.device_id, err)
            else:
                values = {
                    "firmware": parsed.firmware,
                    "users": parsed.users,
                    "fingerprints": parsed.fingerprints,
                    "records": parsed.records,
                    "ip": parsed.ip,
                }
                self._context.hub.update_values(
                    self.device_id, {k: v for k, v in values.items() if v is not None}
                )
        pending = list(self._queued)
        self._queued.clear()
        return Answer(200, codec.commands(pending))

    async def command_results(self, body: bytes) -> Answer:
        parsed = await _parse(codec.parse_results, codec.decode_text(body))
        if parsed.errors:
            self._bad_lines("devicecmd", parsed.errors)
        now = self._context.clock.now()
        entries = []
        for result in parsed.results:
            self._metrics.lines.labels(self.device_id, "devicecmd", "new").inc()
            entries.append(
                _note(
                    stable_id(
                        self._context.site,
                        self.config.serial_number,
                        self._run,
                        result.id,
                        result.code,
                        result.command,
                    ),
                    "punch_clock_command",
                    self.device_id,
                    when=now,
                    now=now,
                    payload={
                        "id": result.id,
                        "return": result.code,
                        "cmd": result.command,
                        **result.details,
                    },
                )
            )
            if result.code != 0:
                log.warning(
                    "%s: command %d (%s) failed with %d",
                    self.device_id,
                    result.id,
                    result.command,
                    result.code,
                )
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self._context.store.record_many([(entry, ()) for entry in entries])
        except (StoreError, TimeoutError) as err:
            log.error("%s: command results not stored: %s", self.device_id, err)
            return STORE_UNAVAILABLE
        for result in parsed.results:
            queued = self._waiting.get(result.id)
            # an id from before a restart may come back with another command's result
            if queued is not None and queued.command == result.command:
                del self._waiting[result.id]
                if not queued.result.done():
                    queued.result.set_result(result)
        return Answer(200, codec.ok(), "bad_frame" if parsed.errors else "ok")

    async def _attlog(self, text: str) -> Answer:
        parsed = await _parse(codec.parse_attlog, text)
        if parsed.errors:
            self._bad_lines(codec.ATTLOG, parsed.errors)
        now = self._context.clock.now()
        records = parsed.records
        events: list[PunchEvent] = []
        fresh: list[bool] = []
        notes: list[JournalEntry] = []
        try:
            for start in range(0, len(records), RECORDS_PER_STEP):
                step_events, step_notes = self._normalize(
                    records[start : start + RECORDS_PER_STEP], now
                )
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    step_fresh = (
                        await self._context.bus.publish_many([(e, "") for e in step_events])
                        if step_events
                        else []
                    )
                    if step_notes:
                        await self._context.store.record_many([(n, ()) for n in step_notes])
                events += step_events
                fresh += step_fresh
                notes += step_notes
                self._server.engine.stored(
                    Punch(event.staff_id, event.ts, event.event_id)
                    for event, new in zip(step_events, step_fresh, strict=True)
                    if new and event.staff_id is not None
                )
        except (StoreError, TimeoutError) as err:
            # no OK: the clock keeps the records and sends them again after ErrorDelay
            log.error(
                "%s: %d of %d records not stored, not acknowledged: %s",
                self.device_id,
                len(records) - len(events) - len(notes),
                len(records),
                err,
            )
            return STORE_UNAVAILABLE
        finally:
            self._account(events, fresh, notes)
        if PushServer.fault_after_commit is not None:
            PushServer.fault_after_commit()
        self._sample_skew([self._hall_time(record) for record in records], now)
        return Answer(200, codec.ok(len(records)), "bad_frame" if parsed.errors else "ok")

    def _normalize(
        self, records: Sequence[codec.AttRecord], now: dt.datetime
    ) -> tuple[list[PunchEvent], list[JournalEntry]]:
        """Punch events to publish and flagged records to journal only, from parsed records."""
        roster = self._context.roster
        staff_ids: list[str | None] = []
        times: list[dt.datetime] = []
        for record in records:
            person = roster.by_pin(record.pin)
            staff_ids.append(person.id if person is not None else None)
            times.append(self._hall_time(record))
        flags = [
            self._flags(record, when, now) for record, when in zip(records, times, strict=True)
        ]
        trusted = [i for i, f in enumerate(flags) if not f]
        annotations = iter(
            self._server.engine.annotate([(staff_ids[i], times[i]) for i in trusted])
        )
        events: list[PunchEvent] = []
        notes: list[JournalEntry] = []
        for index, record in enumerate(records):
            event_id = stable_id(
                self._context.site, self.config.serial_number, record.pin, record.stamp
            )
            direction = self.config.status_map.get(_status(record))
            if direction is None:
                notes.append(self._unmapped(event_id, record, times[index], now, flags[index]))
                continue
            late, early = next(annotations) if not flags[index] else (None, None)
            event = PunchEvent(
                event_id=event_id,
                ts=times[index],
                received_at=now,
                device_id=self.device_id,
                staff_id=staff_ids[index],
                pin=record.pin,
                direction=direction,
                verify=self._verify(record),
                late_minutes=late,
                early_minutes=early,
            )
            if flags[index]:
                notes.append(journal_entry(event, flags=",".join(flags[index]), published=False))
            else:
                events.append(event)
        return events, notes

    def _hall_time(self, record: codec.AttRecord) -> dt.datetime:
        return record.time.replace(tzinfo=self.zone).astimezone(self._context.clock.zone)

    async def _operlog(self, text: str) -> Answer:
        lines = await _parse(codec.operlog_lines, text)
        now = self._context.clock.now()
        fresh: list[bool] = []
        try:
            for start in range(0, len(lines), RECORDS_PER_STEP):
                entries = [
                    self._oplog_entry(line, now) for line in lines[start : start + RECORDS_PER_STEP]
                ]
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    fresh += await self._context.store.record_many([(e, ()) for e in entries])
        except (StoreError, TimeoutError) as err:
            log.error("%s: operation log not stored, not acknowledged: %s", self.device_id, err)
            return STORE_UNAVAILABLE
        finally:
            new = sum(fresh)
            self._metrics.lines.labels(self.device_id, codec.OPERLOG, "new").inc(new)
            self._metrics.lines.labels(self.device_id, codec.OPERLOG, "duplicate").inc(
                len(fresh) - new
            )
        return Answer(200, codec.ok(len(lines)))

    def _oplog_entry(self, line: str, now: dt.datetime) -> JournalEntry:
        stamped = codec.operlog_time(line)
        when = stamped.replace(tzinfo=self.zone).astimezone(now.tzinfo) if stamped else now
        return _note(
            stable_id(self._context.site, self.config.serial_number, codec.OPERLOG, line),
            "operlog",
            self.device_id,
            when=when,
            now=now,
            payload={"serial_number": self.config.serial_number, "line": line},
        )

    def _flags(self, record: codec.AttRecord, when: dt.datetime, now: dt.datetime) -> list[str]:
        flags = []
        if self.config.status_map.get(_status(record)) is None:
            flags.append(FLAG_UNMAPPED)
        ahead = (when - now).total_seconds()
        if ahead > self.config.plausible_future_s or -ahead > self.config.plausible_past_s:
            flags.append(FLAG_IMPLAUSIBLE)
        return flags

    def _verify(self, record: codec.AttRecord) -> VerifyMode:
        if record.verify is None:
            return "other"
        return self.config.verify_map.get(record.verify, "other")

    def _unmapped(
        self,
        event_id: str,
        record: codec.AttRecord,
        when: dt.datetime,
        now: dt.datetime,
        flags: Sequence[str],
    ) -> JournalEntry:
        return _note(
            event_id,
            "punch_unmapped",
            self.device_id,
            when=when,
            now=now,
            payload={
                "serial_number": self.config.serial_number,
                "pin": record.pin,
                "time": record.stamp,
                "status": record.status,
                "verify": record.verify,
                "workcode": record.workcode,
            },
            flags=",".join(flags),
        )

    def _account(
        self, events: Sequence[PunchEvent], fresh: Sequence[bool], notes: Sequence[JournalEntry]
    ) -> None:
        lines = self._metrics.lines
        new = sum(fresh)
        lines.labels(self.device_id, codec.ATTLOG, "new").inc(new)
        lines.labels(self.device_id, codec.ATTLOG, "duplicate").inc(len(fresh) - new)
        unknown = sorted(
            {e.pin for e, n in zip(events, fresh, strict=True) if n and e.staff_id is None}
        )
        if unknown:
            self._metrics.unknown_pins.labels(self.device_id).inc(
                sum(1 for e, n in zip(events, fresh, strict=True) if n and e.staff_id is None)
            )
            log.warning(
                "%s: PINs not on the roster (published with staff_id null): %s",
                self.device_id,
                ", ".join(unknown[:10]),
            )
        implausible = [n for n in notes if FLAG_IMPLAUSIBLE in n.flags.split(",")]
        unmapped = [n for n in notes if FLAG_UNMAPPED in n.flags.split(",")]
        if implausible:
            lines.labels(self.device_id, codec.ATTLOG, "implausible").inc(len(implausible))
            log.warning(
                "%s: %d records stamped far from the gateway's time %s (first %s):"
                " journaled, flagged %s, not published",
                self.device_id,
                len(implausible),
                iso(self._context.clock.now()),
                implausible[0].ts,
                FLAG_IMPLAUSIBLE,
            )
        if unmapped:
            lines.labels(self.device_id, codec.ATTLOG, "unmapped").inc(len(unmapped))
            log.warning(
                "%s: %d records with a status not in status_map: journaled, not published",
                self.device_id,
                len(unmapped),
            )

    def _bad_lines(self, table: str, errors: Sequence[codec.LineError]) -> None:
        self._metrics.lines.labels(self.device_id, table, "malformed").inc(len(errors))
        first = errors[0]
        log.warning(
            "%s: %s body: %d malformed lines skipped; line %d: %s: %r",
            self.device_id,
            table,
            len(errors),
            first.line,
            first.reason,
            first.text,
        )

    def _sample_skew(self, times: Sequence[dt.datetime], now: dt.datetime) -> None:
        if not 0 < len(times) <= SKEW_SAMPLE_MAX_RECORDS:
            return
        loop_now = asyncio.get_running_loop().time()
        self._skew_samples.append((loop_now, (max(times) - now).total_seconds()))
        while self._skew_samples and self._skew_samples[0][0] < loop_now - SKEW_WINDOW_S:
            self._skew_samples.popleft()
        skew = round(max(sample for _, sample in self._skew_samples))
        self._metrics.skew.labels(self.device_id).set(skew)
        self._context.hub.update_values(self.device_id, {"clock_skew_s": skew})

    def _count(self, answer: Answer, started: float) -> None:
        self.runner.count_request(answer.result, time.monotonic() - started)


def mount(config: ZkPushConfig, context: DriverContext) -> Mounted:
    server = context.device_http.get(SERVER_KEY)
    first = server is None
    if server is None:
        server = PushServer(context)
        context.device_http[SERVER_KEY] = server
        server.add_routes(context.device_http.router)
    driver = ClockDriver(config, context, context.runner(config.id, config.profile), server)
    server.add(driver)
    extras = {"driver": driver, "server": server, "attendance": server.engine}
    if not first:
        return Mounted(
            config.id, restore=driver.restore, task=driver.watch, close=driver.close, extras=extras
        )

    async def restore() -> None:
        await server.engine.restore()
        await driver.restore()

    async def run() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(driver.watch(), name=f"watch-{config.id}")
            group.create_task(server.engine.run(), name="attendance")

    return Mounted(
        config.id,
        restore=restore,
        task=run,
        close=driver.close,
        reload=server.engine.reload,
        extras=extras,
    )


T = TypeVar("T", str, bytes)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Metrics:
    lines: Counter
    unknown_pins: Counter
    skew: Gauge


async def _parse(parse: Callable[[T], R], data: T) -> R:
    """Run a pure codec function; in a worker thread when the input is large."""
    if len(data) <= PARSE_INLINE_MAX_BYTES:
        return parse(data)
    return await asyncio.to_thread(parse, data)


def _status(record: codec.AttRecord) -> int:
    return 0 if record.status is None else record.status  # a clock without state keys: check-in


def _note(
    event_id: str,
    kind: str,
    device_id: str,
    *,
    when: dt.datetime,
    now: dt.datetime,
    payload: dict[str, object],
    flags: str = "",
) -> JournalEntry:
    return JournalEntry(
        event_id=event_id,
        kind=kind,
        subject=device_id,
        device_id=device_id,
        ts=iso(when),
        ts_epoch=when.timestamp(),
        received_at=iso(now),
        payload=json.dumps({"v": 1, "device_id": device_id, **payload}, ensure_ascii=False),
        published=False,
        flags=flags,
    )
