"""The content API: the best live content per screen, replacement per source and target,
notification of the screens a change concerns, and refusal of content that cannot be shown."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import FakeClock
from gateway.screens import MAX_CHARS, ContentError, Screens

ZONE = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2026, 11, 20, 10, 0, tzinfo=ZONE)


def _screens() -> tuple[Screens, FakeClock, dict[str, int]]:
    clock = FakeClock(START)
    screens = Screens(clock)
    calls = {"led-a": 0, "led-b": 0}
    for screen_id in calls:

        def bump(screen_id: str = screen_id) -> None:
            calls[screen_id] += 1

        screens.register(screen_id, bump)
    return screens, clock, calls


def test_highest_priority_live_content_wins_and_expiry_falls_back() -> None:
    screens, clock, _calls = _screens()
    assert screens.current("led-a") is None
    screens.show("board", ["外出 张三"])
    screens.show("ops", ["消防演练 10:30"], priority=10, expires_at=START + dt.timedelta(minutes=5))
    best = screens.current("led-a")
    assert best is not None
    assert (best.source, best.lines) == ("ops", ("消防演练 10:30",))
    clock.advance(300)
    best = screens.current("led-a")
    assert best is not None
    assert best.source == "board"


def test_ties_go_to_the_screens_own_content_then_to_the_newest() -> None:
    screens, _clock, _calls = _screens()
    screens.show("board", ["all"])
    screens.show("window", ["only b"], screen="led-b")
    screens.show("news", ["newer all"])
    a, b = screens.current("led-a"), screens.current("led-b")
    assert a is not None
    assert b is not None
    assert a.lines == ("newer all",)
    assert b.lines == ("only b",)


def test_a_source_replaces_its_own_content_per_target_and_can_withdraw_it() -> None:
    screens, _clock, _calls = _screens()
    screens.show("board", ["one"])
    screens.show("board", ["two"])
    screens.show("board", ["b only"], screen="led-b")
    assert [c.lines for c in screens.contents()] == [("b only",), ("two",)]
    assert screens.withdraw("board")
    current = screens.current("led-a")
    assert current is None
    assert screens.withdraw_source("board") == 1
    assert screens.current("led-b") is None
    assert not screens.withdraw("board")


def test_only_the_screens_concerned_are_told() -> None:
    screens, _clock, calls = _screens()
    screens.show("board", ["x"], screen="led-b")
    assert calls == {"led-a": 0, "led-b": 1}
    screens.show("board", ["y"])
    assert calls == {"led-a": 1, "led-b": 2}
    screens.withdraw("board", screen="led-b")
    assert calls == {"led-a": 1, "led-b": 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "board", "lines": ["x"], "screen": "led-z"}, "no screen 'led-z'"),
        ({"source": "bad source", "lines": ["x"]}, "source 'bad source' must match"),
        ({"source": "board", "lines": ["a\nb"]}, "lines[0] holds a line break"),
        ({"source": "board", "lines": ["字" * (MAX_CHARS + 1)]}, f"more than {MAX_CHARS}"),
        ({"source": "board", "lines": ["x"], "expires_at": START}, "already past"),
        (
            {"source": "board", "lines": ["x"], "expires_at": dt.datetime(2026, 11, 21)},
            "UTC offset",
        ),
        ({"source": "board", "lines": ["x"], "priority": True}, "priority must be an integer"),
    ],
)
def test_content_that_cannot_be_shown_is_refused_and_changes_nothing(
    kwargs: dict[str, object], message: str
) -> None:
    screens, _clock, calls = _screens()
    screens.show("board", ["kept"])
    before = dict(calls)
    with pytest.raises(ContentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        screens.show(**kwargs)  # type: ignore[arg-type]
    current = screens.current("led-a")
    assert current is not None
    assert current.lines == ("kept",)
    assert calls == before
