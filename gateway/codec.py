"""What every codec shares: its error type and the shape of `decode`."""

from __future__ import annotations

from typing import Protocol, TypeVar

FrameT_co = TypeVar("FrameT_co", covariant=True)


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
