"""What the hall's text screens show: content from sources, by priority and expiry.

A source (the board engine, an operator's tool, a rule) says "this screen, or every screen, shows
these lines, with this priority, until then". Each screen shows the highest-priority content that
has not expired; among equals, content for that screen beats content for every screen, and newer
beats older. A source holds one content per target and replaces it by showing again.

Sources know nothing of screen hardware; screens (the LED driver) know nothing of sources: they
register, are told when to look again, and ask `current`. Expiry is not announced: a screen looks
again by the `expires_at` of what it shows. Content lives in memory only; after a restart each
source shows its content again. A `cmd/display` message is not content: the screen's driver shows
it over whatever content says, for its seconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from gateway.clock import Clock

log = logging.getLogger(__name__)

# a screen pages through long text; past this a source is sending a document, not a notice
MAX_CHARS: Final = 2000
# lines of one content; an LED strip shows one, a window screen a handful
MAX_LINES: Final = 50
_SOURCE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

OnChange = Callable[[], None]


class ContentError(ValueError):
    """Content that cannot be shown (unknown screen, bad source, too long, already expired)."""


@dataclass(frozen=True)
class ScreenContent:
    source: str
    lines: tuple[str, ...]
    priority: int
    screen: str | None  # None: every screen
    expires_at: dt.datetime | None
    set_at: dt.datetime
    seq: int  # order in which contents were set: newer wins a tie

    def live(self, now: dt.datetime) -> bool:
        return self.expires_at is None or now < self.expires_at

    def rank(self, screen_id: str) -> tuple[int, bool, int]:
        return (self.priority, self.screen == screen_id, self.seq)


class Screens:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._screens: dict[str, list[OnChange]] = {}
        self._contents: dict[tuple[str, str | None], ScreenContent] = {}
        self._seq = itertools.count(1)

    @property
    def screen_ids(self) -> tuple[str, ...]:
        return tuple(self._screens)

    def register(self, screen_id: str, on_change: OnChange) -> None:
        """A screen that shows content; `on_change` is called whenever its content may differ."""
        self._screens.setdefault(screen_id, []).append(on_change)

    def show(
        self,
        source: str,
        lines: Iterable[str],
        *,
        screen: str | None = None,
        priority: int = 0,
        expires_at: dt.datetime | None = None,
    ) -> ScreenContent:
        """`screen` (None: every screen) shows `lines` for `source`, replacing what `source` had
        set for that target. An empty `lines` is a blank screen at that priority."""
        now = self._clock.now()
        items = tuple(lines)
        self._check(
            source=source,
            lines=items,
            screen=screen,
            priority=priority,
            expires_at=expires_at,
            now=now,
        )
        content = ScreenContent(
            source=source,
            lines=items,
            priority=priority,
            screen=screen,
            expires_at=expires_at,
            set_at=now,
            seq=next(self._seq),
        )
        self._contents[(source, screen)] = content
        self._prune(now)
        self._notify(screen)
        return content

    def withdraw(self, source: str, *, screen: str | None = None) -> bool:
        """Take back what `source` set for `screen` (None: its content for every screen)."""
        removed = self._contents.pop((source, screen), None) is not None
        if removed:
            self._notify(screen)
        return removed

    def withdraw_source(self, source: str) -> int:
        """Take back everything `source` set."""
        keys = [key for key in self._contents if key[0] == source]
        for key in keys:
            del self._contents[key]
        for _source, screen in keys:
            self._notify(screen)
        return len(keys)

    def current(self, screen_id: str, now: dt.datetime | None = None) -> ScreenContent | None:
        """What `screen_id` shows now: the best live content for it, or None."""
        when = self._clock.now() if now is None else now
        live = [
            c for c in self._contents.values() if c.screen in (None, screen_id) and c.live(when)
        ]
        return max(live, key=lambda c: c.rank(screen_id), default=None)

    def contents(self, screen_id: str | None = None) -> list[ScreenContent]:
        """Every live content (for one screen: those that target it), best first."""
        now = self._clock.now()
        self._prune(now)
        found = [
            c for c in self._contents.values() if screen_id is None or c.screen in (None, screen_id)
        ]
        return sorted(found, key=lambda c: c.rank(screen_id or ""), reverse=True)

    def _check(
        self,
        *,
        source: str,
        lines: tuple[str, ...],
        screen: str | None,
        priority: int,
        expires_at: dt.datetime | None,
        now: dt.datetime,
    ) -> None:
        if not _SOURCE.match(source):
            raise ContentError(f"source {source!r} must match [A-Za-z0-9_.:-]{{1,64}}")
        if screen is not None and screen not in self._screens:
            raise ContentError(f"no screen {screen!r} (screens: {', '.join(self._screens)})")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ContentError("priority must be an integer")
        if len(lines) > MAX_LINES:
            raise ContentError(f"{len(lines)} lines; at most {MAX_LINES}")
        for index, line in enumerate(lines):
            if not isinstance(line, str):
                raise ContentError(f"lines[{index}] is not text")
            if any(ch in line for ch in "\r\n"):
                raise ContentError(f"lines[{index}] holds a line break; give one line per item")
        if sum(len(line) for line in lines) > MAX_CHARS:
            raise ContentError(f"more than {MAX_CHARS} characters")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ContentError("expires_at needs a UTC offset")
            if expires_at <= now:
                raise ContentError("expires_at is already past")

    def _prune(self, now: dt.datetime) -> None:
        for key in [key for key, c in self._contents.items() if not c.live(now)]:
            del self._contents[key]

    def _notify(self, screen: str | None) -> None:
        targets = self._screens.values() if screen is None else [self._screens[screen]]
        for callbacks in targets:
            for callback in callbacks:
                callback()
