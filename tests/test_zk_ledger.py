"""`hallgw attendance`: the day's table, the month's tables, CSV, flagged records, and errors."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.attendance import FLAG_IMPLAUSIBLE
from gateway.bus import journal_entry
from gateway.cli import main
from gateway.events import PunchEvent
from gateway.ledger import display_width, print_ledger
from gateway.store import Store
from tests.support.harness import write_config
from tests.support.zk import clock_hall

ZONE = ZoneInfo("Asia/Shanghai")
AFTER = dt.datetime(2026, 12, 2, tzinfo=ZONE)


def punch(pin: str, staff_id: str | None, local: str) -> PunchEvent:
    when = dt.datetime.fromisoformat(local).replace(tzinfo=ZONE)
    return PunchEvent(
        event_id=f"{pin}-{local}",
        ts=when,
        received_at=when,
        device_id="clock-1",
        staff_id=staff_id,
        pin=pin,
        direction="in",
        verify="face",
    )


async def a_store(tmp_path: Path) -> Path:
    config = write_config(tmp_path / "hall.yaml", clock_hall(tmp_path, mqtt_port=1883, staff=3))
    async with Store(tmp_path / "hallgw.db", outbox_max_messages=1000) as store:
        good = [
            # s001 follows `early` (in by 08:40), s002 `standard` (in by 09:00)
            punch("1001", "s001", "2026-11-20T08:45:10"),
            punch("1001", "s001", "2026-11-20T12:01:00"),
            punch("1001", "s001", "2026-11-20T14:30:00"),
            punch("1001", "s001", "2026-11-20T17:20:00"),
            punch("1002", None, "2026-11-20T08:58:00"),  # PIN added to the roster later
            punch("1002", None, "2026-11-20T17:40:00"),
        ]
        for event in good:
            await store.record(journal_entry(event))
        late_backlog = punch("1003", "s003", "2026-11-20T08:31:00")
        await store.record(journal_entry(late_backlog, flags=FLAG_IMPLAUSIBLE, published=False))
    return config


def ledger(
    config: Path,
    *,
    day: dt.date | None = None,
    month: dt.date | None = None,
    csv_path: str | None = None,
    include_flagged: bool = False,
) -> tuple[int, str]:
    out = io.StringIO()
    status = print_ledger(
        str(config),
        day=day,
        month=month,
        csv_path=csv_path,
        include_flagged=include_flagged,
        out=out,
        now=AFTER,
    )
    return status, out.getvalue()


async def test_a_days_table_has_a_row_per_person(tmp_path: Path) -> None:
    config = await a_store(tmp_path)
    status, text = await asyncio.to_thread(ledger, config, day=dt.date(2026, 11, 20))
    assert status == 0
    lines = text.splitlines()
    assert lines[0] == "测试政务服务中心 考勤 2026-11-20 星期五"
    assert lines[1].split() == [
        "staff", "name", "timetable", "first", "in", "last", "out", "late", "min", "early",
        "min", "no", "punch", "absent", "month", "late/early", "month", "half", "days",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["s001"] == [
        "s001",
        "员工1",
        "early",
        "08:45:10",
        "17:20:00",
        "6",
        "10",
        "0",
        "0",
        "2",
        "0",
    ]
    assert rows["s002"] == [
        "s002",
        "员工2",
        "standard",
        "08:58:00",
        "17:40:00",
        "0",
        "0",
        "2",
        "0",
        "0",
        "0",
    ]
    assert rows["s003"] == ["s003", "员工3", "early", "0", "0", "0", "2", "0", "0"]
    # columns line up although the names are two columns wide per character
    column = lines[2].index("early")
    assert display_width(lines[2][:column]) == display_width(
        lines[1][: lines[1].index("timetable")]
    )
    assert "1 punch records were journaled with a flag" in text


async def test_flagged_punches_count_when_asked(tmp_path: Path) -> None:
    config = await a_store(tmp_path)
    _, text = await asyncio.to_thread(
        ledger, config, day=dt.date(2026, 11, 20), include_flagged=True
    )
    s003 = next(line.split() for line in text.splitlines() if line.startswith("s003"))
    assert s003[3] == "08:31:00"
    assert "journaled with a flag" not in text


async def test_a_month_as_tables_and_csv(tmp_path: Path) -> None:
    config = await a_store(tmp_path)
    csv_path = tmp_path / "november.csv"
    status, text = await asyncio.to_thread(
        ledger, config, month=dt.date(2026, 11, 1), csv_path=str(csv_path)
    )
    assert status == 0
    assert text.count("考勤 2026-11: s00") == 3
    # November 2026 has 21 working days; s001 punched on one of them, twice late or early
    assert "late 1 (6 min), early 1 (10 min), no punch 0, absent 40 periods" in text
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel needs the mark to read the names
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 3 * 21
    friday = next(r for r in rows if r["staff_id"] == "s001" and r["date"] == "2026-11-20")
    assert friday["late_minutes"] == "6"
    assert friday["month_late_early"] == "2"
    assert friday["name"] == "员工1"


async def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "hall.yaml", clock_hall(tmp_path, mqtt_port=1883))
    status = await asyncio.to_thread(
        main, ["attendance", "-c", str(config), "--date", "2026-11-20"]
    )
    assert status == 1
    assert f"cannot read the store: no store at {tmp_path / 'hallgw.db'}" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("site: Bad Site\n")
    assert (
        await asyncio.to_thread(main, ["attendance", "-c", str(broken), "--month", "2026-11"]) == 2
    )
    assert "site: must match" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["attendance", "-c", str(config), "--date", "2026-11-31"])
    assert exited.value.code == 2
    assert "'2026-11-31' is not a date like 2026-11-20" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attendance", "-c", str(config)])
    assert "one of the arguments --date --month is required" in capsys.readouterr().err
