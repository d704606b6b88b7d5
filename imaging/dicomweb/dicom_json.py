"""DICOM JSON (PS3.18 F.2) for index rows: keyword -> {"vr", "Value"} by the data dictionary."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"})


@cache
def tag_hex(keyword: str) -> str | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else f"{tag:08X}"


@cache
def vr_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return "UN" if tag is None else str(dictionary_VR(tag))


def attribute(keyword: str, value: Any) -> tuple[str, dict[str, Any]] | None:
    """One DICOM JSON attribute from a scalar index value."""
    tag = tag_hex(keyword)
    if tag is None:
        return None
    vr = vr_of(keyword)
    if value is None or value == "":
        return tag, {"vr": vr}
    if vr == "PN":
        return tag, {"vr": vr, "Value": [{"Alphabetic": str(value)}]}
    if vr in NUMERIC_VRS:
        return tag, {"vr": vr, "Value": [value]}
    return tag, {"vr": vr, "Value": [str(value)]}


def dataset(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword, value in values.items():
        item = attribute(keyword, value)
        if item is not None:
            out[item[0]] = item[1]
    return dict(sorted(out.items()))
