"""Stable identifiers: the same fact always gets the same `event_id`."""

from __future__ import annotations

import hashlib

_SEPARATOR = "\x1f"  # a control character no id part contains


def stable_id(*parts: object) -> str:
    """A 24-hex-digit id derived from the parts that identify a fact."""
    text = _SEPARATOR.join(str(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
