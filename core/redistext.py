"""Decode what redis-py returns (bytes, since clients here do not set ``decode_responses``)."""

from __future__ import annotations

from typing import Any


def text(raw: Any) -> str:
    """Return a Redis reply item as ``str``."""
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)
