"""Leave (请假): who is away with leave, from the hall office's file or the API.

An entry names a person and a span: `from` and `to` are dates (whole days, `to` included) or
date-times (`2026-11-20T13:30`, for half days; `to` excluded). The file is YAML (a list of
entries, or `{leave: [...]}`) or CSV (UTF-8, a byte order mark allowed, header
`staff_id,from,to,note`), told apart by the file's suffix (`.csv`, else YAML):

    - {staff_id: s001, from: 2026-11-20, to: 2026-11-21, note: 年假}
    - {staff_id: s002, from: "2026-11-20T13:30", to: "2026-11-20T17:30", note: 半天事假}

A file with any bad entry is refused whole (every error named by its line or index and field),
and the leave in force stays what it was: nothing is half-applied.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from gateway.configbase import IDENT_PATTERN
from gateway.ids import stable_id

CSV_COLUMNS: Final = ("staff_id", "from", "to", "note")
# a leave file is a list kept by hand; past this it is the wrong file
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
# an entry longer than this is a typo in a year, not leave
MAX_LEAVE_DAYS: Final = 366

Source = Literal["file", "api"]


class LeaveError(ValueError):
    """Leave that cannot be used; `errors` name where and what."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _day_or_time(value: Any) -> dt.date:
    """A date (`2026-11-20`, a whole day) or a date-time (`2026-11-20T13:30`), told apart by
    the text itself (pydantic would read a bare date as midnight)."""
    if isinstance(value, dt.date):  # YAML gives dates and date-times already parsed
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == len("2026-11-20"):
                return dt.date.fromisoformat(text)
            return dt.datetime.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError("must be a date like 2026-11-20 or a date-time like 2026-11-20T13:30")


DayOrTime = Annotated[
    dt.date, PlainValidator(_day_or_time), PlainSerializer(lambda v: v.isoformat(), return_type=str)
]


class LeaveRequest(BaseModel):
    """One entry, as in the file and in `POST /api/v1/leave`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    staff_id: str = Field(pattern=IDENT_PATTERN, max_length=64)
    from_: DayOrTime = Field(alias="from")
    to: DayOrTime
    note: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _ordered(self) -> LeaveRequest:
        if isinstance(self.from_, dt.datetime) != isinstance(self.to, dt.datetime):
            raise ValueError("to: give from and to both as dates or both as date-times")
        if isinstance(self.from_, dt.datetime) and isinstance(self.to, dt.datetime):
            if self.from_.tzinfo is not None or self.to.tzinfo is not None:
                raise ValueError("from: give hall time without a UTC offset")
            if self.to <= self.from_:
                raise ValueError("to: must be after from")
        elif self.to < self.from_:
            raise ValueError("to: must be on or after from")
        if _as_date(self.to) - _as_date(self.from_) > dt.timedelta(days=MAX_LEAVE_DAYS):
            raise ValueError(f"to: leave of more than {MAX_LEAVE_DAYS} days")
        return self


@dataclass(frozen=True)
class Leave:
    leave_id: str
    staff_id: str
    start: dt.datetime
    end: dt.datetime  # excluded
    note: str
    source: Source
    request: LeaveRequest

    def covers(self, at: dt.datetime) -> bool:
        return self.start <= at < self.end

    def covers_day(self, day: dt.date, zone: ZoneInfo) -> bool:
        first = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        return self.start < first + dt.timedelta(days=1) and first < self.end

    def payload(self) -> dict[str, Any]:
        return {
            "leave_id": self.leave_id,
            "staff_id": self.staff_id,
            "from": self.request.from_.isoformat(),
            "to": self.request.to.isoformat(),
            "note": self.note,
            "source": self.source,
        }


def make_leave(request: LeaveRequest, zone: ZoneInfo, source: Source, site: str) -> Leave:
    start, end = _span(request, zone)
    leave_id = stable_id(
        site, "leave", source, request.staff_id, request.from_.isoformat(), request.to.isoformat()
    )
    return Leave(leave_id, request.staff_id, start, end, request.note, source, request)


def load_leave_file(
    path: str | Path, zone: ZoneInfo, staff_ids: Iterable[str], site: str
) -> list[Leave]:
    """Every entry of the file, or LeaveError naming every bad one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LeaveError([f"{path}: {size} bytes; a leave file is at most {MAX_FILE_BYTES}"])
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise LeaveError([f"{path}: cannot read: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise LeaveError([f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"]) from err
    rows = _csv_rows(text, path) if path.suffix.lower() == ".csv" else _yaml_rows(text, path)
    return parse_entries(rows, zone, set(staff_ids), site)


def parse_entries(
    rows: list[tuple[str, Any]], zone: ZoneInfo, staff_ids: set[str], site: str
) -> list[Leave]:
    """`rows`: (where, raw entry). Every error is collected before any is raised."""
    errors: list[str] = []
    result: list[Leave] = []
    for where, raw in rows:
        if not isinstance(raw, Mapping):
            errors.append(f"{where}: must be a mapping with staff_id, from, to")
            continue
        try:
            request = LeaveRequest.model_validate(dict(raw))
        except ValidationError as err:
            errors.extend(f"{where}.{message}" for message in validation_messages(err))
            continue
        if request.staff_id not in staff_ids:
            errors.append(f"{where}.staff_id: no staff {request.staff_id!r} in the roster")
            continue
        result.append(make_leave(request, zone, "file", site))
    if errors:
        raise LeaveError(errors)
    return result


def validation_messages(err: ValidationError) -> list[str]:
    """`field: message` for each error; a model-level `field: text` keeps its field."""
    messages = []
    for error in err.errors():
        loc = ".".join(str(part) for part in error["loc"])
        text = str(error["msg"]).removeprefix("Value error, ")
        if not loc and ": " in text:
            loc, text = text.split(": ", 1)
        messages.append(f"{loc or 'body'}: {text}")
    return messages


def _yaml_rows(text: str, path: Path) -> list[tuple[str, Any]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise LeaveError([f"{path}: {where}: not valid YAML"]) from None
    if data is None:
        return []
    if isinstance(data, Mapping) and set(data) == {"leave"}:
        data = data["leave"] or []
    if not isinstance(data, list):
        raise LeaveError([f"{path}: must be a list of entries (or `leave:` with one)"])
    return [(f"{path.name}[{index}]", entry) for index, entry in enumerate(data)]


def _csv_rows(text: str, path: Path) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(reader.fieldnames or ())
    missing = [c for c in CSV_COLUMNS[:3] if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        raise LeaveError(
            [f"{path}: line 1: the header must be {','.join(CSV_COLUMNS)} (note optional)"]
        )
    rows: list[tuple[str, Any]] = []
    for row in reader:
        entry = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            rows.append((f"{path.name} line {reader.line_num}", "more fields than the header"))
            continue
        if not any(entry.values()):
            continue
        rows.append((f"{path.name} line {reader.line_num}", entry))
    return rows


def _as_date(value: dt.date) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _span(request: LeaveRequest, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    start, end = request.from_, request.to
    if isinstance(start, dt.datetime) and isinstance(end, dt.datetime):
        return start.replace(tzinfo=zone), end.replace(tzinfo=zone)
    first = dt.datetime.combine(_as_date(start), dt.time(0), tzinfo=zone)
    last = dt.datetime.combine(_as_date(end) + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return first, last
