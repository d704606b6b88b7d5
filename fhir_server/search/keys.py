"""How index values are spelled as strings, so one single-field index answers each query.

The embedded store uses only single-field indexes and answers `$in`/`$or` by scanning,
so every row carries its parameter code and value in one string field: `k` (exact
key), `c` (alternate key: token code without system, folded string) and `h` (upper
bound of a date range). Numbers and instants are fixed-width digits, so string order is
numeric order and a range query is a range over the key.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal, InvalidOperation

SEP = "\x1f"
TOP = "\U0010ffff"
_DATE_OFFSET = 10**16
_DATE_WIDTH = 17
OPEN_END = "9" * _DATE_WIDTH
_SCALE = Decimal(10**6)
_NUMBER_OFFSET = 10**24
_NUMBER_WIDTH = 25


def key(code: str, *parts: str) -> str:
    return SEP.join((code, *parts))


def prefix_range(prefix: str) -> dict[str, str]:
    """A filter matching every key that starts with `prefix`."""
    return {"$gte": prefix, "$lt": prefix + TOP}


def instant_key(epoch_ms: int) -> str:
    return f"{epoch_ms + _DATE_OFFSET:0{_DATE_WIDTH}d}"


def number_key(value: Decimal) -> str:
    scaled = int((value * _SCALE).to_integral_value())
    return f"{scaled + _NUMBER_OFFSET:0{_NUMBER_WIDTH}d}"


def decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def fold(text: str) -> str:
    """Lower case without accents: 'Šimkus' -> 'simkus', 'Ёлкин' -> 'елкин'."""
    if text.isascii():
        return text.lower()  # what casefold + NFKD + dropping combining marks give ASCII
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
