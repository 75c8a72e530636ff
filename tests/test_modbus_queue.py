"""The modbus_queue profile's pure parts: register maps, read plans, decoding, snapshot
comparison and RTU frames. The end-to-end tests are in test_modbus_queue_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from drivers.modbus_queue import rtu
from drivers.modbus_queue.changes import Baseline, Change, compare
from drivers.modbus_queue.config import ModbusQueueConfig, RegisterMap
from drivers.modbus_queue.driver import QueuePoller
from drivers.modbus_queue.registers import (
    Header,
    MapError,
    Read,
    RegisterLayout,
    ServiceState,
    Snapshot,
    WindowState,
    ticket_label,
)
from drivers.modbus_queue.tcp import TcpLink
from gateway.clock import SystemClock
from gateway.config import ConfigError, parse_config
from gateway.devices import DeviceHub
from gateway.errors import BadResponse, DeviceTimeout, StoreError
from gateway.events import Event, QueueEvent
from gateway.metrics import Metrics
from gateway.roster import Roster
from gateway.runner import DeviceRunner
from simulators.modbus_queue import QueueController, QueueEngine
from tests.support.polling import until
from tests.support.queue import VENDOR_MAP

# -- register maps in config ---------------------------------------------------------------------


def queue_config(register_map: dict[str, Any] | None = None, **device: Any) -> str:
    entry: dict[str, Any] = {"id": "queue-main", "profile": "modbus_queue", "host": "10.0.0.2"}
    entry.update(device)
    if register_map is not None:
        entry["register_map"] = register_map
    return yaml.safe_dump({"site": "hall", "devices": [entry]})


def queue_device(text: str) -> ModbusQueueConfig:
    device = parse_config(text).devices[0]
    assert isinstance(device, ModbusQueueConfig)
    return device


def config_errors(register_map: dict[str, Any] | None = None, **device: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(queue_config(register_map, **device))
    return caught.value.errors


def test_the_default_map_is_v1_of_the_device_contract() -> None:
    rmap = queue_device(queue_config()).register_map
    assert rmap.header.registers() == {
        "version": 0,
        "windows": 1,
        "waiting_total": 2,
        "issued_today": 3,
        "change_counter": 4,
        "services": 5,
    }
    assert (rmap.windows.base, rmap.windows.stride) == (100, 10)
    assert rmap.windows.fields.offsets() == {
        "status": 0,
        "ticket": 1,
        "prefix": 2,
        "served_today": 3,
        "staff": 4,
        "call_count": 5,
        "service": 6,
    }
    assert (rmap.services.base, rmap.services.stride) == (1000, 4)
    assert rmap.services.fields.offsets() == {
        "waiting": 0,
        "longest_wait_s": 1,
        "last_issued": 2,
        "prefix": 3,
    }
    assert rmap.status_codes == {0: "closed", 1: "idle", 2: "serving", 3: "paused"}
    assert rmap.max_read == 125


def test_another_vendors_map_is_a_yaml_block() -> None:
    device = queue_device(queue_config(VENDOR_MAP))
    layout = RegisterLayout(device.register_map)
    assert layout.header_read == Read(10, 2)
    plan = layout.plan(6, 3)
    assert plan.reads == (Read(200, 30), Read(232, 14), Read(400, 6))


@pytest.mark.parametrize(
    ("register_map", "expected"),
    [
        (
            {"windows": {"max_count": 100}},
            "devices[0].register_map.services: block 1000..1399 overlaps the windows block 100..1099",
        ),
        (
            {"header": {"waiting_total": 120}},
            "devices[0].register_map.windows: block 100..999 overlaps header.waiting_total at register 120",
        ),
        (
            {"windows": {"stride": 125, "fields": {"call_count": 124}}, "max_read": 100},
            "devices[0].register_map.windows: one record needs a read of 125 registers, more than max_read 100",
        ),
        (
            {
                "services": {
                    "base": 2000,
                    "stride": 125,
                    "max_count": 2,
                    "fields": {"prefix": 124},
                },
                "max_read": 120,
            },
            "devices[0].register_map.services: one record needs a read of 125 registers, more than max_read 120",
        ),
        (
            {"header": {"services": 300}},
            "devices[0].register_map.header: registers 0..300 need a read of 301 registers, more than max_read 125",
        ),
        ({"max_read": 126}, "devices[0].register_map.max_read: must be 1..125 (got 126)"),
        (
            {"windows": {"stride": 5}},
            "devices[0].register_map.windows.stride: 5 leaves no room for service at offset 6",
        ),
        (
            {"windows": {"fields": {"ticket": 0}}},
            "devices[0].register_map.windows.fields.ticket: 0 is already used by status",
        ),
        (
            {"header": {"change_counter": 1}},
            "devices[0].register_map.header.change_counter: 1 is already used by windows",
        ),
        (
            {"header": {"windows": None}},
            "devices[0].register_map.windows: give the number of windows either as header.windows or as windows.count",
        ),
        (
            {"services": {"count": 4}},
            "devices[0].register_map.services: give the number of services either as header.services or as services.count",
        ),
        (
            {"windows": {"base": 65000}},
            "devices[0].register_map.windows.max_count: 90 records of 10 from 65000 end past register 65535",
        ),
        (
            {"status_codes": {0: "closed", 1: "open"}},
            "devices[0].register_map.status_codes.1: must be 'closed', 'idle', 'serving' or 'paused'",
        ),
        ({"status_codes": {}}, "devices[0].register_map.status_codes: must map at least one"),
        ({"windows": {"strid": 10}}, "devices[0].register_map.windows.strid: unknown key"),
    ],
)
def test_a_wrong_map_is_a_config_error_naming_its_field(
    register_map: dict[str, Any], expected: str
) -> None:
    errors = config_errors(register_map)
    assert any(error.startswith(expected) for error in errors), errors


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ({"timeout_s": 0}, "devices[0].timeout_s: must be 0.01..10.0 seconds"),
        (
            {"transport": "rtu", "host": None, "url": "/dev/ttyUSB0", "baudrate": 100},
            "devices[0].baudrate: must be 300..4000000",
        ),
        (
            {"transport": "rtu", "host": None},
            "devices[0].bus: transport rtu needs either bus or url",
        ),
        ({"unit": 248}, "devices[0].unit: must be 1..247"),
    ],
)
def test_device_fields_are_checked(device: dict[str, Any], expected: str) -> None:
    errors = config_errors(**device)
    assert any(error.startswith(expected) for error in errors), errors


# -- read plans ----------------------------------------------------------------------------------


def test_v1_polls_read_the_header_alone_and_twelve_windows_in_one_request() -> None:
    layout = RegisterLayout(RegisterMap())
    assert layout.header_read == Read(0, 6)
    plan = layout.plan(12, 4)
    # windows 1..12: registers 100..216 (the last record's fields end at 216); services 1000..1015
    assert plan.reads == (Read(100, 117), Read(1000, 16))


def test_long_blocks_are_split_at_record_boundaries_within_max_read() -> None:
    plan = RegisterLayout(RegisterMap()).plan(90, 100)
    assert all(read.count <= 125 for read in plan.reads)
    window_reads = [r for r in plan.reads if r.address < 1000]
    # 12 records of 10 (the last one 7 wide) fit 125: 117 registers; 90 windows need 8 reads
    assert [r.count for r in window_reads] == [117] * 7 + [57]
    assert all((r.address - 100) % 10 == 0 for r in window_reads)
    service_reads = [r for r in plan.reads if r.address >= 1000]
    assert [r.count for r in service_reads] == [124, 124, 124, 28]


def test_without_read_padding_only_touching_records_are_merged() -> None:
    layout = RegisterLayout(RegisterMap(read_padding=False))
    plan = layout.plan(3, 2)
    # v1 window records leave 3 registers between them; service records touch
    assert plan.reads == (Read(100, 7), Read(110, 7), Read(120, 7), Read(1000, 8))


def test_adjacent_blocks_are_merged_into_one_read() -> None:
    rmap = RegisterMap.model_validate(
        {
            "windows": {"base": 100, "stride": 7, "max_count": 10},
            "services": {"base": 170, "max_count": 10},
        }
    )
    assert RegisterLayout(rmap).plan(10, 5).reads == (Read(100, 90),)


maps = st.builds(
    lambda stride, gap, max_read, padding: RegisterMap.model_validate(
        {
            "windows": {"base": 100, "stride": stride, "max_count": 40},
            "services": {"base": 100 + stride * 40 + gap, "max_count": 30},
            "max_read": max_read,
            "read_padding": padding,
        }
    ),
    stride=st.integers(7, 30),
    gap=st.integers(0, 20),
    max_read=st.integers(30, 125),
    padding=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    rmap=maps, windows=st.integers(0, 40), services=st.integers(0, 30), seed=st.integers(0, 2**16)
)
def test_a_plan_covers_every_field_once_within_max_read_and_decodes_what_was_written(
    rmap: RegisterMap, windows: int, services: int, seed: int
) -> None:
    engine = QueueEngine(max(windows, 1), max(services, 1), register_map=rmap)
    engine.windows = engine.windows[:windows]
    engine.services = engine.services[:services]
    for n, window in enumerate(engine.windows, 1):
        window.status = ("idle", "serving", "paused", "closed")[(n + seed) % 4]
        window.ticket, window.prefix, window.service = (n * seed) % 999, "B", 1 + n % 3
        window.served, window.staff, window.calls = seed % 50 + n, 100 + n, 1 + (seed + n) % 3
    image = engine.registers()
    plan = RegisterLayout(rmap).plan(windows, services)
    covered: list[int] = []
    for read in plan.reads:
        assert 1 <= read.count <= rmap.max_read
        covered.extend(range(read.address, read.address + read.count))
    assert len(covered) == len(set(covered)), "no register is read twice"
    parts = [
        plan.decode_read(i, image[read.address : read.address + read.count])
        for i, read in enumerate(plan.reads)
    ]
    header = Header(windows, services, 0, 1, 0, 0)
    snapshot = plan.snapshot(header, parts)
    for n, (window, state) in enumerate(zip(engine.windows, snapshot.windows, strict=True), 1):
        assert state.status == window.status
        assert state.ticket == window.ticket
        assert state.served_today == window.served, n
        assert state.call_count == (window.calls if window.ticket else 0)
    assert [s.waiting for s in snapshot.services] == [0] * services


# -- decoding ------------------------------------------------------------------------------------


def test_header_decoding_checks_version_and_counts() -> None:
    layout = RegisterLayout(RegisterMap())
    assert layout.decode_header([1, 12, 7, 230, 9, 4]) == Header(12, 4, 9, 1, 7, 230)
    with pytest.raises(MapError, match="map version 2, expected 1"):
        layout.decode_header([2, 12, 7, 230, 9, 4])
    with pytest.raises(MapError, match="91 windows reported; the map holds at most 90"):
        layout.decode_header([1, 91, 7, 230, 9, 4])
    with pytest.raises(MapError, match="101 services reported"):
        layout.decode_header([1, 12, 7, 230, 9, 101])


def test_a_value_the_map_does_not_know_is_a_map_error_naming_the_window() -> None:
    plan = RegisterLayout(RegisterMap()).plan(2, 1)
    window_read = [1, 23, 65, 4, 101, 1, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0]
    with pytest.raises(MapError, match=r"window 2: status 7 is not in register_map\.status_codes"):
        plan.decode_read(0, window_read)
    window_read[10], window_read[2] = 1, 200
    with pytest.raises(MapError, match="window 1: ticket prefix 200 is not printable ASCII"):
        plan.decode_read(0, window_read)


@pytest.mark.parametrize(
    ("prefix", "number", "label"),
    [(65, 23, "A023"), (66, 1234, "B1234"), (0, 7, "007"), (65, 0, None)],
)
def test_tickets_are_prefix_and_at_least_three_digits(
    prefix: int, number: int, label: str | None
) -> None:
    assert ticket_label(prefix, number) == label


# -- snapshot comparison -------------------------------------------------------------------------

IDLE = WindowState("idle", 0, 0, 10, 101, 0, 0)
SERVING = WindowState("serving", 23, 65, 10, 101, 1, 1)


def snap(*windows: WindowState, waiting: tuple[int, ...] = (5, 2)) -> Snapshot:
    header = Header(len(windows), len(waiting), 0, 1, sum(waiting), 0)
    services = tuple(ServiceState(w, 0, 0, 65 + i) for i, w in enumerate(waiting))
    return Snapshot(header, windows, services)


def changes(
    before: WindowState, after: WindowState, *, done: bool = False
) -> list[tuple[Any, ...]]:
    baseline = Baseline(snap(before), (done,))
    found, _ = compare(baseline, snap(after))
    return [(c.action, c.ticket, c.service, c.waiting) for c in found]


def w(base: WindowState, **changed: Any) -> WindowState:
    return base._replace(**changed)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(IDLE, SERVING, [("called", "A023", 1, 5)], id="called"),
        pytest.param(
            SERVING, w(SERVING, call_count=2), [("recalled", "A023", 1, 5)], id="recalled"
        ),
        pytest.param(
            SERVING, w(IDLE, served_today=11), [("finished", "A023", 1, 5)], id="finished"
        ),
        pytest.param(SERVING, IDLE, [("skipped", "A023", 1, 5)], id="skipped"),
        pytest.param(
            SERVING,
            w(SERVING, ticket=24),
            [("skipped", "A023", 1, 5), ("called", "A024", 1, 5)],
            id="skipped for the next",
        ),
        pytest.param(
            SERVING,
            w(SERVING, ticket=24, served_today=11),
            [("finished", "A023", 1, 5), ("called", "A024", 1, 5)],
            id="finished and next called",
        ),
        pytest.param(IDLE, w(IDLE, status="paused"), [("paused", None, None, None)], id="paused"),
        pytest.param(w(IDLE, status="paused"), IDLE, [("resumed", None, None, None)], id="resumed"),
        pytest.param(w(IDLE, status="closed"), IDLE, [("opened", None, None, None)], id="opened"),
        pytest.param(IDLE, w(IDLE, status="closed"), [("closed", None, None, None)], id="closed"),
        pytest.param(w(IDLE, status="serving"), IDLE, [], id="idle and serving are no events"),
        pytest.param(
            w(IDLE, status="closed"),
            w(SERVING, service=2, prefix=66),
            [("opened", None, None, None), ("called", "B023", 2, 2)],
            id="opened, then called",
        ),
        pytest.param(
            SERVING,
            w(IDLE, status="paused", served_today=11),
            [("finished", "A023", 1, 5), ("paused", None, None, None)],
            id="finished, then paused",
        ),
        pytest.param(
            SERVING,
            w(IDLE, status="closed", served_today=11),
            [("finished", "A023", 1, 5), ("closed", None, None, None)],
            id="finished, then closed",
        ),
    ],
)
def test_one_change_between_polls_is_one_event(
    before: WindowState, after: WindowState, expected: list[tuple[Any, ...]]
) -> None:
    assert changes(before, after) == expected


def test_several_finishes_and_recalls_between_polls_are_all_counted() -> None:
    # A023 finished, two more tickets called and finished, then A026 called and recalled twice
    after = w(SERVING, ticket=26, served_today=13, call_count=3)
    assert changes(SERVING, after) == [
        ("finished", "A023", 1, 5),
        ("finished", None, None, None),
        ("finished", None, None, None),
        ("called", "A026", 1, 5),
        ("recalled", "A026", 1, 5),
        ("recalled", "A026", 1, 5),
    ]
    assert changes(SERVING, w(SERVING, call_count=4)) == [("recalled", "A023", 1, 5)] * 3


def test_a_day_that_starts_again_counts_the_new_days_finishes() -> None:
    assert changes(w(IDLE, served_today=150), w(IDLE, served_today=2)) == [
        ("finished", None, None, None),
        ("finished", None, None, None),
    ]


def test_a_ticket_called_back_after_a_skip_is_called_again() -> None:
    before = w(SERVING, call_count=3)
    assert changes(before, SERVING) == [("skipped", "A023", 1, 5), ("called", "A023", 1, 5)]


def test_a_controller_that_keeps_showing_a_finished_ticket_does_not_skip_it() -> None:
    finished_shown = w(SERVING, status="idle", served_today=11)
    baseline = Baseline(snap(SERVING), (False,))
    first, baseline = compare(baseline, snap(finished_shown))
    assert [c.action for c in first] == ["finished"]
    assert baseline.finished == (True,)
    second, _ = compare(baseline, snap(w(SERVING, ticket=24, served_today=11)))
    assert [(c.action, c.ticket) for c in second] == [("called", "A024")]


def test_a_window_the_controller_did_not_report_before_is_a_baseline() -> None:
    found, baseline = compare(Baseline.first(snap(IDLE)), snap(IDLE, SERVING))
    assert found == []
    assert baseline.finished == (False, False)
    found, _ = compare(baseline, snap(IDLE, w(SERVING, call_count=2)))
    assert found == [Change(2, "recalled", "A023", 1, 5)]


def test_a_baseline_kept_as_text_is_the_same_baseline() -> None:
    baseline = Baseline(snap(IDLE, SERVING, waiting=(5, 2, 0)), (False, True))
    assert Baseline.loads(baseline.dumps()) == baseline
    header_unknown = snap(IDLE)._replace(header=Header(1, 2, None, None, None, None))
    assert Baseline.loads(Baseline.first(header_unknown).dumps()).snapshot == header_unknown


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"format": 2}',
        '{"format": 1, "header": [1], "windows": [], "services": [], "finished": []}',
        Baseline(snap(IDLE), (False,)).dumps().replace('"finished":[false]', '"finished":[]'),
    ],
)
def test_text_that_is_no_baseline_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a baseline|format|Expecting value"):
        Baseline.loads(text)


# -- RTU frames ----------------------------------------------------------------------------------

_CONTROLLER = FramerRTU(DecodePDU(is_server=True))


def test_rtu_requests_and_answers_round_trip_through_pymodbus_framing() -> None:
    request = rtu.read_request(7, 100, 117)
    consumed, frame = rtu.decode_request(request)
    assert consumed == len(request) == 8
    assert frame == rtu.RtuFrame(7, 3, address=100, count=117)
    answer = _CONTROLLER.buildFrame(ReadHoldingRegistersResponse(registers=[1, 2, 65535], dev_id=7))
    assert len(answer) == rtu.answer_size(3)
    assert rtu.decode_answer(answer[:-1]) == (0, None)
    assert rtu.decode_answer(answer + b"\xff\x68") == (
        len(answer),
        rtu.RtuFrame(7, 3, (1, 2, 65535)),
    )
    failure = _CONTROLLER.buildFrame(ExceptionResponse(3, 4, device_id=7))
    consumed, frame = rtu.decode_answer(failure)
    assert frame is not None
    assert (consumed, frame.is_exception, frame.exception_code) == (5, True, 4)


def test_a_corrupt_rtu_frame_is_a_frame_error_that_drops_one_byte() -> None:
    answer = bytearray(
        _CONTROLLER.buildFrame(ReadHoldingRegistersResponse(registers=[5], dev_id=1))
    )
    answer[3] ^= 0x01
    with pytest.raises(rtu.RtuFrameError, match="CRC mismatch") as caught:
        rtu.decode_answer(answer)
    assert caught.value.consumed == 1
    with pytest.raises(rtu.RtuFrameError, match="unknown function code 0x68"):
        rtu.decode_request(bytes([1, 0x68, 0, 0, 0]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_rtu_decoder_never_crashes_and_always_makes_progress_or_waits(data: bytes) -> None:
    buffer = bytearray(data)
    while buffer:
        consumed = _consumed(buffer)
        if consumed == 0:
            break
        assert consumed >= 1
        del buffer[:consumed]


def _consumed(buffer: bytearray) -> int:
    try:
        consumed, _frame = rtu.decode_answer(buffer)
    except rtu.RtuFrameError as err:
        return max(err.consumed, 0) or -1
    return consumed


# -- a poll over TCP, without the rest of the gateway ---------------------------------------------


class FlakyStore:
    """An EventSink whose commits fail while `failing` is set, like a full disk."""

    def __init__(self) -> None:
        self.failing = False
        self.stored: list[QueueEvent] = []

    async def publish_many(
        self, events: Sequence[tuple[Event, str]], *, cursor: tuple[str, str] | None = None
    ) -> list[bool]:
        if self.failing:
            raise StoreError("disk full")
        self.stored.extend(event for event, _flags in events if isinstance(event, QueueEvent))
        return [True] * len(events)


class BrokenEngine(QueueEngine):
    """Answers window 2's status register with a value no map knows, while `broken`."""

    broken = False

    def registers(self) -> list[int]:
        image = list(super().registers())
        if self.broken:
            image[110] = 9
        return image


@dataclasses.dataclass
class Poll:
    controller: QueueController
    poller: QueuePoller
    link: TcpLink
    hub: DeviceHub
    metrics: Metrics
    store: FlakyStore

    def requests(self, result: str) -> float:
        labels = {"device_id": "queue-main", "kind": "queue", "result": result}
        return self.metrics.registry.get_sample_value("hallgw_device_requests_total", labels) or 0

    @property
    def values(self) -> Mapping[str, Any]:
        return self.hub.get("queue-main").values


@pytest.fixture
async def tcp_poll() -> AsyncIterator[Poll]:
    engine = BrokenEngine(3, 2)
    controller = QueueController(engine)
    port = await controller.serve_tcp()
    config = parse_config(
        yaml.safe_dump(
            {
                "site": "hall",
                "windows": [{"id": "w01", "queue_window": 1}, {"id": "w02", "queue_window": 2}],
                "staff": [{"id": "s001", "name": "张三", "window": "w01", "queue_no": 101}],
                "devices": [
                    {
                        "id": "queue-main",
                        "profile": "modbus_queue",
                        "host": "127.0.0.1",
                        "port": port,
                    }
                ],
            }
        )
    )
    device = config.devices[0]
    assert isinstance(device, ModbusQueueConfig)
    clock = SystemClock(config.zone)
    metrics = Metrics()
    hub = DeviceHub([(device.id, "queue")], clock, metrics)
    runner = DeviceRunner(device.id, "queue", hub, metrics)
    store = FlakyStore()
    poller = QueuePoller(
        device, site="hall", clock=clock, bus=store, hub=hub, roster=Roster(config)
    )
    link = TcpLink("127.0.0.1", port, 1, timeout_s=1.0, count=runner.count_request, name=device.id)
    await link.connect()
    try:
        yield Poll(controller, poller, link, hub, metrics, store)
    finally:
        link.close()
        await controller.stop()


async def test_a_failed_commit_leaves_the_baseline_and_the_next_poll_finds_the_changes_again(
    tcp_poll: Poll,
) -> None:
    engine = tcp_poll.controller.engine
    await tcp_poll.poller.poll(tcp_poll.link.read)
    assert tcp_poll.values["windows"]["w01"]["status"] == "closed"
    engine.open(1)
    engine.issue(1)
    engine.call(1)
    tcp_poll.store.failing = True
    await tcp_poll.poller.poll(tcp_poll.link.read)
    assert tcp_poll.store.stored == []
    assert tcp_poll.values["windows"]["w01"]["status"] == "closed", "nothing half-applied"
    tcp_poll.store.failing = False
    await tcp_poll.poller.poll(tcp_poll.link.read)
    stored = [(e.window_id, e.action, e.ticket) for e in tcp_poll.store.stored]
    assert stored == [("w01", "opened", None), ("w01", "called", "A001")]
    w01 = tcp_poll.values["windows"]["w01"]
    assert (w01["status"], w01["ticket"], w01["staff_id"], w01["staff_no"]) == (
        "serving",
        "A001",
        "s001",
        101,
    )
    assert tcp_poll.values["services"]["1"] == {
        "waiting": 0,
        "longest_wait_s": 0,
        "last_issued": "A001",
    }
    # the controller's third window is no configured window's queue_window
    assert set(tcp_poll.values["windows"]) == {"w01", "w02", "queue-main-w3"}


async def test_a_register_the_map_does_not_know_is_a_bad_response_and_changes_nothing(
    tcp_poll: Poll,
) -> None:
    engine = tcp_poll.controller.engine
    assert isinstance(engine, BrokenEngine)
    await tcp_poll.poller.poll(tcp_poll.link.read)
    before = dict(tcp_poll.values)
    engine.open(2)
    engine.broken = True
    with pytest.raises(
        BadResponse, match=r"window 2: status 9 is not in register_map\.status_codes"
    ):
        await tcp_poll.poller.poll(tcp_poll.link.read)
    assert tcp_poll.requests("bad_response") == 1
    assert tcp_poll.values == before
    assert tcp_poll.store.stored == []
    engine.broken = False
    await tcp_poll.poller.poll(tcp_poll.link.read)
    assert [(e.window_id, e.action) for e in tcp_poll.store.stored] == [("w02", "opened")]
    assert tcp_poll.requests("ok") >= 5


async def test_a_stored_baseline_that_is_unusable_is_left_aside(
    tcp_poll: Poll, caplog: pytest.LogCaptureFixture
) -> None:
    tcp_poll.poller.restore('{"format": 1}')
    assert tcp_poll.poller.snapshot is None
    assert "stored baseline unusable" in caplog.text
    await tcp_poll.poller.poll(tcp_poll.link.read)
    assert tcp_poll.poller.snapshot is not None, "the first poll is the baseline"
    assert tcp_poll.store.stored == []


# -- the read watchdog ------------------------------------------------------------------------------


async def test_each_read_has_its_own_deadline_not_the_polls(tcp_poll: Poll) -> None:
    """A poll of three reads that takes longer than the timeout in all is no timeout, as long as
    every read is answered within it: one watchdog serves the reads, each with its own start."""
    await tcp_poll.poller.poll(tcp_poll.link.read)  # the baseline
    engine = tcp_poll.controller.engine
    engine.open(1)
    engine.issue(1)
    engine.call(1)
    tcp_poll.link.timeout_s = 0.8
    tcp_poll.controller.answer_delay_s = 0.3  # three reads: 0.9 s
    started = asyncio.get_running_loop().time()
    await tcp_poll.poller.poll(tcp_poll.link.read)
    assert asyncio.get_running_loop().time() - started > tcp_poll.link.timeout_s
    assert tcp_poll.requests("timeout") == 0
    assert [(e.window_id, e.action) for e in tcp_poll.store.stored] == [
        ("w01", "opened"),
        ("w01", "called"),
    ]


async def test_a_read_with_no_answer_times_out_and_the_next_read_gets_its_answer(
    tcp_poll: Poll,
) -> None:
    layout = tcp_poll.poller.layout
    assert layout.header_read is not None
    await tcp_poll.link.read(layout.header_read, layout.decode_header)  # arms the watchdog, 1 s
    tcp_poll.link.timeout_s = 0.2
    tcp_poll.controller.fault = "silent"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeviceTimeout, match=r"no answer within 0\.2 s"):
        await tcp_poll.link.read(layout.header_read, layout.decode_header)
    assert loop.time() - started < 1.0, "the shorter deadline, not the one the watchdog had"
    assert tcp_poll.requests("timeout") == 1
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0, "the watchdog's cancellation is taken back"
    tcp_poll.controller.fault = None
    header = await tcp_poll.link.read(layout.header_read, layout.decode_header)
    assert header.windows == 3
    assert tcp_poll.requests("ok") == 2


async def test_a_cancellation_from_outside_wins_over_the_watchdog(tcp_poll: Poll) -> None:
    """The gateway stopping a device while its read is being ended (the connection dropped) is
    a cancellation, not a failed read: the task must stop."""
    layout = tcp_poll.poller.layout
    assert layout.header_read is not None
    tcp_poll.controller.fault = "silent"
    reader = asyncio.create_task(tcp_poll.link.read(layout.header_read, layout.decode_header))
    await until(lambda: tcp_poll.controller.reads >= 1, what="the read to reach the controller")
    # as pymodbus reports a dropped connection, and in the same turn the gateway stops the task
    tcp_poll.link._on_connection(False)  # noqa: FBT003
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert tcp_poll.requests("io_error") == 0
