"""What every codec shares: its error type and the shape of `decode`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

FrameT_co = TypeVar("FrameT_co", covariant=True)
F = TypeVar("F")
T = TypeVar("T")


class FrameError(ValueError):
    """A complete frame that is invalid. `consumed` bytes may be dropped to resynchronise."""

    def __init__(self, reason: str, consumed: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.consumed = consumed


class Decoder(Protocol[FrameT_co]):
    def __call__(self, buffer: bytes | bytearray, /) -> tuple[int, FrameT_co | None]:
        """Return (bytes consumed, frame or None when more bytes are needed).

        Garbage before a frame is consumed with no frame; a complete but invalid frame raises
        the codec's FrameError subclass, whose `consumed` says how much to drop.
        """


def scan(
    buffer: bytearray, decode: Decoder[F], match: Callable[[F], T | None]
) -> tuple[T | None, list[str]]:
    """Decode what has arrived in `buffer`, consuming it, until `match` accepts a frame.

    Returns that answer (or None: nothing yet, the rest of a frame still to come) and the reasons
    of the bad frames skipped on the way. Frames `match` declines (another device's, a late
    answer) are dropped. A link calls this after every read; it does no I/O itself.
    """
    bad: list[str] = []
    while buffer:
        try:
            consumed, frame = decode(buffer)
        except FrameError as err:
            del buffer[: max(1, err.consumed)]
            bad.append(err.reason)
            continue
        del buffer[:consumed]
        if frame is not None:
            answer = match(frame)
            if answer is not None:
                return answer, bad
        elif consumed == 0:
            break  # a partial frame: wait for the rest
    return None, bad
