"""Comparison prefixes of date, number and quantity values (`ge2024-03`, `lt5.4`)."""

from __future__ import annotations

PREFIXES = frozenset({"eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"})


def split_prefix(value: str) -> tuple[str, str]:
    """`ge2024` -> ("ge", "2024"); no prefix means `eq`."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value
