"""PS3.4 C.2.2.2 matching of one attribute value in memory (the worklist's records).

The index is searched by MongoDB (see `query`); worklist records are built from FHIR
ServiceRequests per query, so their keys are matched here.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.dataset import Dataset

from access.budget import Budget
from imaging.wildcard import Wildcard, compile_wildcard, has_wildcards

MAX_WILDCARD_CHARS = Budget().max_wildcard_chars
RANGE_VRS = frozenset({"DA", "TM", "DT"})
TEXT_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"})


def matches(
    wanted: str, value: str | None, vr: str, max_wildcard_chars: int = MAX_WILDCARD_CHARS
) -> bool:
    """Does a record's `value` match the query key `wanted` (empty = universal)?
    Wildcards go through the one compiler QIDO-RS and C-FIND use, matched without a
    regex; an over-long wildcard value raises MB-3041 (A700)."""
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
    if has_wildcards(wanted):
        return _compiled(wanted, max_wildcard_chars).matches(value)
    if "\\" in wanted:
        return value in wanted.split("\\")
    return value == wanted


def check_wildcards(identifier: Dataset, max_wildcard_chars: int = MAX_WILDCARD_CHARS) -> None:
    """Refuse (MB-3041) an identifier holding an over-long wildcard value, sequence
    items included, before any record is fetched to match it against."""
    for element in identifier:
        if element.VR == "SQ":
            for item in element.value or ():
                check_wildcards(item, max_wildcard_chars)
        elif element.VR in TEXT_VRS and element.value is not None:
            text = str(element.value)  # PN values are PersonName objects
            if has_wildcards(text):
                _compiled(text.strip().upper(), max_wildcard_chars)


@lru_cache(maxsize=256)
def _compiled(wanted: str, max_wildcard_chars: int) -> Wildcard:
    return compile_wildcard(wanted, max_wildcard_chars)
