"""The gateway's own error types. Low-level errors are translated once, at the boundary."""

from __future__ import annotations

from typing import Literal

RequestResult = Literal["ok", "timeout", "io_error", "bad_frame", "bad_response", "unknown_device"]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class DeviceError(GatewayError):
    """An exchange with a device failed; `result` is its `hallgw_device_requests_total` label."""

    result: RequestResult = "io_error"

    def __init__(self, message: str, *, reconnect: bool = False) -> None:
        super().__init__(message)
        # the link is unusable (socket closed, port gone): close it and open it again
        self.reconnect = reconnect


class DeviceTimeout(DeviceError):
    result: RequestResult = "timeout"


class DeviceIOError(DeviceError):
    result: RequestResult = "io_error"

    def __init__(self, message: str, *, reconnect: bool = True) -> None:
        super().__init__(message, reconnect=reconnect)


class BadFrame(DeviceError):
    result: RequestResult = "bad_frame"


class BadResponse(DeviceError):
    result: RequestResult = "bad_response"


class StoreError(GatewayError):
    """The store could not commit (disk full, I/O error, read-only file)."""
