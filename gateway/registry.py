"""Which driver serves which profile: an explicit mapping, no import-time discovery."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from drivers.ff68_pad.driver import mount as mount_pad
from drivers.kiosk_http.driver import mount as mount_kiosk
from drivers.led_text.driver import mount as mount_led
from drivers.modbus_queue.driver import mount as mount_queue
from drivers.zk_push.driver import mount as mount_zk_push
from gateway.context import DriverContext, Mounted

Mount = Callable[[Any, DriverContext], Mounted]

DRIVERS: Mapping[str, Mount] = MappingProxyType(
    {
        "ff68_pad": mount_pad,
        "zk_push": mount_zk_push,
        "modbus_queue": mount_queue,
        "led_text": mount_led,
        "kiosk_http": mount_kiosk,
    }
)


def unsupported_devices(profiles: list[str]) -> list[str]:
    """`devices[i].profile` errors for profiles this build has no driver for."""
    return [
        f"devices[{index}].profile: {profile} has no driver in this version of hall-gateway"
        for index, profile in enumerate(profiles)
        if profile not in DRIVERS
    ]
