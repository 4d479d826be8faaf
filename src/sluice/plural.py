"""Counted nouns for log lines and messages: "1 partition", "3 partitions"."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``count`` and the noun in the number it takes (``nouns`` where adding "s" is wrong)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
