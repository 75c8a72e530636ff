"""Who works where: staff found by card (pads), PIN (punch clocks) or queue number (callers)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.config import Config, StaffConfig, WindowConfig


class Roster:
    """Drivers keep a reference to the gateway's one roster; `update` changes it in place, so a
    reload (SIGHUP) reaches them all at once."""

    def __init__(self, config: Config) -> None:
        self.update(config)

    def update(self, config: Config) -> None:
        """Take the staff and windows of `config` (every lookup at once: no half-old roster)."""
        self.staff: Mapping[str, StaffConfig] = MappingProxyType({s.id: s for s in config.staff})
        self.windows: Mapping[str, WindowConfig] = MappingProxyType(
            {w.id: w for w in config.windows}
        )
        self._by_card = {s.card: s for s in config.staff if s.card is not None}
        self._by_pin = {s.pin: s for s in config.staff if s.pin is not None}
        self._by_queue_no = {s.queue_no: s for s in config.staff if s.queue_no is not None}
        self._window_by_queue_no = {
            w.queue_window: w for w in config.windows if w.queue_window is not None
        }

    def by_card(self, card: str) -> StaffConfig | None:
        return self._by_card.get(card)

    def by_pin(self, pin: str) -> StaffConfig | None:
        return self._by_pin.get(pin)

    def by_queue_no(self, queue_no: int) -> StaffConfig | None:
        return self._by_queue_no.get(queue_no)

    def window_by_queue_number(self, number: int) -> WindowConfig | None:
        return self._window_by_queue_no.get(number)
