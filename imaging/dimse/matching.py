"""PS3.4 C.2.2.2 matching of one attribute value in memory (the worklist's records).

The index is searched by MongoDB (see `query`); worklist records are built from FHIR
ServiceRequests per query, so their keys are matched here.
"""

from __future__ import annotations

import re
from functools import cache

RANGE_VRS = frozenset({"DA", "TM", "DT"})


def matches(wanted: str, value: str | None, vr: str) -> bool:
    """Does a record's `value` match the query key `wanted` (empty = universal)?"""
    wanted = wanted.strip()
    if not wanted or wanted == "*":
        return True
    if value is None or value == "":
        return False
    if vr == "UI":
        return value in wanted.split("\\")
    if vr in RANGE_VRS and "-" in wanted:
        low, _, high = wanted.partition("-")
        return (not low or value >= low) and (not high or value[: len(high)] <= high)
    if vr == "PN":  # names: case-insensitive, as modalities send upper case
        wanted, value = wanted.upper(), value.upper()
    if "*" in wanted or "?" in wanted:
        return _pattern(wanted).fullmatch(value) is not None
    if "\\" in wanted:
        return value in wanted.split("\\")
    return value == wanted


@cache
def _pattern(wanted: str) -> re.Pattern[str]:
    text = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted)
    return re.compile(text, re.DOTALL)
