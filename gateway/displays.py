"""`cmd/display/{device_id}`: show a message on any device that can display text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.commands import CommandRejected, DisplayCommand
from gateway.context import Display
from gateway.devices import DeviceHub
from gateway.errors import DeviceError


class DisplayCommands:
    def __init__(self, hub: DeviceHub, displays: Mapping[str, Display]) -> None:
        self._hub = hub
        self._displays = displays

    async def handle(self, device_id: str | None, body: dict[str, Any]) -> None:
        command = DisplayCommand.model_validate(body)
        assert device_id is not None  # the route carries the device in its topic
        display = self._displays.get(device_id)
        if display is None:
            try:
                kind = self._hub.get(device_id).kind
            except KeyError:
                raise CommandRejected(f"unknown device {device_id}") from None
            raise CommandRejected(f"device {device_id} ({kind}) cannot display text")
        try:
            await display.show_message(command.text, command.seconds)
        except DeviceError as err:
            raise CommandRejected(f"{device_id}: {err}") from err
