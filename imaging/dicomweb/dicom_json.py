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


# how a value is written: a person name, a number, or text
_NAME, _NUMBER, _TEXT = 0, 1, 2


@cache
def _spec(keyword: str) -> tuple[str, str, int] | None:
    """(tag, VR, how the value is written), one cache lookup per attribute: a QIDO
    answer writes 1,000 rows of a dozen attributes each on the event loop."""
    tag = tag_hex(keyword)
    if tag is None:
        return None
    vr = vr_of(keyword)
    return tag, vr, _NAME if vr == "PN" else _NUMBER if vr in NUMERIC_VRS else _TEXT


def _value(vr: str, kind: int, value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {"vr": vr}
    if kind == _NAME:
        return {"vr": vr, "Value": [{"Alphabetic": str(value)}]}
    if kind == _NUMBER:
        return {"vr": vr, "Value": [value]}
    return {"vr": vr, "Value": [str(value)]}


def attribute(keyword: str, value: Any) -> tuple[str, dict[str, Any]] | None:
    """One DICOM JSON attribute from a scalar index value."""
    spec = _spec(keyword)
    if spec is None:
        return None
    tag, vr, kind = spec
    return tag, _value(vr, kind, value)


def dataset(values: dict[str, Any], ordered: bool = True) -> dict[str, Any]:
    """The attributes of `values` by tag; `ordered=False` leaves the sorting by tag to
    a caller that adds attributes and sorts once."""
    out: dict[str, Any] = {}
    for keyword, value in values.items():
        spec = _spec(keyword)
        if spec is not None:
            out[spec[0]] = _value(spec[1], spec[2], value)
    return dict(sorted(out.items())) if ordered else out
