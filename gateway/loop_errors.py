"""What the gateway tells the event loop about errors it already handles.

Libraries report some errors straight to the loop's exception handler, which logs them as
unhandled. Those the gateway expects and handles are logged quietly here; everything else still
goes to the loop's default handler (and fails the test suite).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def handle_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    if isinstance(error, OSError):
        transport = type(context.get("transport")).__module__
        if transport.startswith("serial_asyncio"):
            # a serial port went away (a USB adapter unplugged, a serial server rebooted): the
            # transport closes, and the bus scheduler reopens the port when it is back
            log.info("serial port lost: %s (%s)", error, context.get("message", ""))
            return
    loop.default_exception_handler(context)
