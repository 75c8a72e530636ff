"""Text for LED screens: GBK, visible replacement of what GBK cannot encode, and paging.

Pure: a text that does not fit a screen's `max_bytes` is cut into pages between characters, each
valid GBK of at most `max_bytes` (marker included), in reading order, each ending in a marker such
as ` (1/3)` so that the public knows more follows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

ENCODING: Final = "gbk"
# shown instead of a character GBK has no code for (an emoji, a rare ideograph): visible, and in
# every controller's font
REPLACEMENT: Final = "?"
# between the lines of one content on a one-line strip: an ideographic space reads as a pause
LINE_SEPARATOR: Final = "\u3000"
MARKER: Final = " ({page}/{pages})"


@dataclass(frozen=True)
class GbkText:
    """`text` as GBK, one chunk per character, and how many characters were replaced."""

    chars: tuple[bytes, ...]
    replaced: int

    @property
    def data(self) -> bytes:
        return b"".join(self.chars)

    @property
    def text(self) -> str:
        """What the screen will read: the text with replacements."""
        return self.data.decode(ENCODING)


def to_gbk(text: str) -> GbkText:
    chars: list[bytes] = []
    replaced = 0
    for char in text:
        try:
            chars.append(char.encode(ENCODING))
        except UnicodeEncodeError:
            chars.append(REPLACEMENT.encode(ENCODING))
            replaced += 1
    return GbkText(tuple(chars), replaced)


def join_lines(lines: Iterable[str]) -> str:
    return LINE_SEPARATOR.join(line.strip() for line in lines if line.strip())


def marker(page: int, pages: int) -> bytes:
    return MARKER.format(page=page, pages=pages).encode(ENCODING)


def paginate(text: GbkText, max_bytes: int) -> list[bytes]:
    """The pages that show `text` on a screen holding `max_bytes`: one page, unmarked, when it
    fits; else pages cut between characters, each with its marker, none over `max_bytes`."""
    data = text.data
    if len(data) <= max_bytes:
        return [data]
    pages = 2
    while True:
        room = max_bytes - len(marker(pages, pages))
        if room < max((len(c) for c in text.chars), default=1):
            raise ValueError(f"{max_bytes} bytes cannot hold a character and a page marker")
        chunks = _fill(text.chars, room)
        if len(chunks) <= pages:
            return [chunk + marker(n, len(chunks)) for n, chunk in enumerate(chunks, start=1)]
        pages = len(chunks)  # a longer marker leaves less room: cut again


def _fill(chars: tuple[bytes, ...], room: int) -> list[bytes]:
    chunks: list[bytes] = []
    current = bytearray()
    for char in chars:
        if len(current) + len(char) > room:
            chunks.append(bytes(current))
            current.clear()
        current += char
    if current:
        chunks.append(bytes(current))
    return chunks
