"""Queue events from two snapshots of a controller (devices.md §3). Pure: no I/O, no clock.

Per window, in the order they most plausibly happened:

1. `opened` (closed → open), `resumed` (paused → idle or serving);
2. the ticket on display: replaced (by another ticket or by none) → the old one `finished` if
   served today grew, else `skipped`; every further growth of served today is a ticket that was
   called and finished between the two polls: `finished` with no ticket; then the new ticket is
   `called`, and `recalled` once for each call beyond the first. Kept → `recalled` once per
   growth of its call count;
3. `paused` (→ paused), `closed` (open → closed).

So served today and the call count account for every finish and every recall of the ticket on
display. What happened entirely between two polls (a ticket called and skipped, a recall of a
ticket that was then replaced, a pause shorter than the poll) leaves no trace in the registers.
"""

from __future__ import annotations

import json
from typing import Any, Final, NamedTuple

from drivers.modbus_queue.registers import Header, ServiceState, Snapshot, WindowState
from gateway.events import QueueAction

BASELINE_FORMAT: Final = 1  # of `Baseline.dumps`; a baseline of another format is not used


class Change(NamedTuple):
    """One queue event, before it gets a window id, a time and an event id."""

    window: int  # the controller's window number, 1…W
    action: QueueAction
    ticket: str | None = None
    service: int | None = None
    waiting: int | None = None


class Baseline(NamedTuple):
    """What the next snapshot is compared with."""

    snapshot: Snapshot
    # per window: the ticket on display is already counted as finished (a controller that keeps
    # showing a ticket after finishing it must not have it counted as skipped when replaced)
    finished: tuple[bool, ...]

    @classmethod
    def first(cls, snapshot: Snapshot) -> Baseline:
        return cls(snapshot, (False,) * len(snapshot.windows))

    def dumps(self, texts: RowTexts | None = None) -> str:
        """The baseline as text, kept in the store with the events that led to it.

        `texts`: the rows' texts kept from this controller's last baselines. This runs on every
        poll that finds a change, which mostly leaves every window but one as it was.
        """
        text = (RowTexts() if texts is None else texts).text
        snapshot = self.snapshot
        windows = ",".join([text(2 + n, w) for n, w in enumerate(snapshot.windows)])
        first_service = 2 + len(snapshot.windows)
        services = ",".join([text(first_service + n, s) for n, s in enumerate(snapshot.services)])
        return (
            f'{{"format":{BASELINE_FORMAT},"header":{text(0, snapshot.header)},'
            f'"windows":[{windows}],"services":[{services}],"finished":{text(1, self.finished)}}}'
        )

    @classmethod
    def loads(cls, text: str) -> Baseline:
        """A baseline from `dumps`; ValueError if the text is not one."""
        try:
            data: Any = json.loads(text)
            if data["format"] != BASELINE_FORMAT:
                raise ValueError(f"format {data['format']!r}")
            snapshot = Snapshot(
                Header(*data["header"]),
                tuple(WindowState(*w) for w in data["windows"]),
                tuple(ServiceState(*s) for s in data["services"]),
            )
            finished = tuple(bool(f) for f in data["finished"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a baseline: {err}") from err
        if len(finished) != len(snapshot.windows):
            raise ValueError("not a baseline: one finished flag a window")
        return cls(snapshot, finished)


class RowTexts:
    """The JSON of each register row (the header, a window, a service, the finished flags) by
    its place in one controller's baseline, kept from one baseline to the next.

    A row is compared with the last row at its place (a tuple compare of a few small ints),
    which is cheaper than hashing every row for a cache shared by all controllers.
    """

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[tuple[tuple[Any, ...], str] | None] = []

    def text(self, place: int, row: tuple[Any, ...]) -> str:
        rows = self._rows
        if place < len(rows):
            kept = rows[place]
            if kept is not None and kept[0] == row:
                return kept[1]
        else:
            rows.extend([None] * (place + 1 - len(rows)))
        text = _ENCODE(row)
        rows[place] = (row, text)
        return text


_ENCODE: Final = json.JSONEncoder(separators=(",", ":")).encode


def compare(baseline: Baseline, current: Snapshot) -> tuple[list[Change], Baseline]:
    """The events between `baseline` and `current`, and the baseline for the next comparison."""
    before, was_finished = baseline.snapshot.windows, baseline.finished
    if current.windows == before:  # only the queues changed (a ticket issued)
        return [], Baseline(current, was_finished)
    changes: list[Change] = []
    finished: list[bool] = []
    for index, now in enumerate(current.windows):
        if index >= len(before):
            finished.append(False)  # a window the controller did not report before
            continue
        if now == before[index]:
            finished.append(was_finished[index])
            continue
        done = _window(
            index + 1,
            before[index],
            now,
            done=was_finished[index],
            current=current,
            out=changes,
        )
        finished.append(done)
    return changes, Baseline(current, tuple(finished))


def _window(
    number: int,
    old: WindowState,
    new: WindowState,
    *,
    done: bool,
    current: Snapshot,
    out: list[Change],
) -> bool:
    """Append the window's changes to `out`; return whether its ticket now counts as finished."""
    was_open, is_open = old.status != "closed", new.status != "closed"
    if is_open and not was_open:
        out.append(Change(number, "opened"))
    if old.status == "paused" and new.status in ("idle", "serving"):
        out.append(Change(number, "resumed"))
    done = _tickets(number, old, new, done=done, current=current, out=out)
    if new.status == "paused" and old.status != "paused":
        out.append(Change(number, "paused"))
    if was_open and not is_open:
        out.append(Change(number, "closed"))
    return done


def _tickets(
    number: int,
    old: WindowState,
    new: WindowState,
    *,
    done: bool,
    current: Snapshot,
    out: list[Change],
) -> bool:
    finishes = new.served_today - old.served_today
    if finishes < 0:  # the controller's day started again (or it was reset)
        finishes = new.served_today
    same = (old.ticket, old.prefix, old.service) == (new.ticket, new.prefix, new.service)
    if same and new.ticket and 0 < new.call_count < old.call_count:
        same = False  # the same ticket called afresh (a skipped ticket called back)
    if same:
        if new.ticket and finishes and not done:
            out.append(Change(number, "finished", *_ticket(new, current)))
            finishes -= 1
            done = True
        out.extend(Change(number, "finished") for _ in range(finishes))
        if new.ticket and old.call_count:
            recalls = new.call_count - old.call_count
            out.extend(Change(number, "recalled", *_ticket(new, current)) for _ in range(recalls))
        return done
    if old.ticket and not done:
        if finishes:
            out.append(Change(number, "finished", *_ticket(old, current)))
            finishes -= 1
        else:
            out.append(Change(number, "skipped", *_ticket(old, current)))
    out.extend(Change(number, "finished") for _ in range(finishes))
    if new.ticket:
        ticket = _ticket(new, current)
        out.append(Change(number, "called", *ticket))
        out.extend(Change(number, "recalled", *ticket) for _ in range(new.call_count - 1))
    return False


def _ticket(window: WindowState, current: Snapshot) -> tuple[str | None, int | None, int | None]:
    """The ticket, its service and the tickets still waiting for that service."""
    if not window.service:
        return window.label, None, None
    return window.label, window.service, current.waiting(window.service)
