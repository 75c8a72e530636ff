"""Waiting for a condition on state that has no event to wait on (a simulator's), with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

# how often the condition is checked: fast enough that tests do not idle
POLL_S: Final = 0.02


async def until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Return `condition()` once it is truthy; fail after `timeout` seconds, naming `what`."""
    try:
        async with asyncio.timeout(timeout):
            # a simulator's state changes without telling anyone: poll it, with the deadline
            while not (result := condition()):  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
            return result
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
