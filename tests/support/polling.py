"""Waiting for a condition on state that has no event to wait on (a simulator's), with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


async def until_async(
    condition: Callable[[], Awaitable[Any]],
    what: str | Callable[[], str],
    timeout: float = 5.0,
    every_s: float = POLL_S,
) -> Any:
    """`until` for a condition that must be awaited (a scrape, an HTTP request, a store read):
    return its result once truthy; fail after `timeout` seconds, naming `what` (or what the
    callable says then, e.g. the last value seen)."""
    try:
        async with asyncio.timeout(timeout):
            # the gateway process or the store has no event to wait on: poll, with the deadline
            while not (result := await condition()):  # noqa: ASYNC110
                await asyncio.sleep(every_s)
            return result
    except TimeoutError:
        named = what if isinstance(what, str) else what()
        raise AssertionError(f"timed out after {timeout}s waiting for {named}") from None
