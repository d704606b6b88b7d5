"""FHIR date/dateTime/instant values as millisecond ranges, precision made explicit.

`2024-03` is the whole of March 2024: [2024-03-01T00:00, 2024-04-01T00:00). Values
without a zone are taken as UTC, which is what a server without the sender's zone can do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_PATTERN = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def date_range(value: str) -> tuple[int, int] | None:
    """[low, high) in epoch milliseconds, or None when `value` is not a FHIR date."""
    match = _PATTERN.fullmatch(value.strip())
    if match is None:
        return None
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        month = int(parts["month"] or 1)
        day = int(parts["day"] or 1)
        hour = int(parts["hour"] or 0)
        minute = int(parts["minute"] or 0)
        second = int(parts["second"] or 0)
        fraction = parts["fraction"] or ""
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        zone = _zone(parts["zone"])
        low = datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
    except ValueError:
        return None
    if parts["month"] is None:
        high = low.replace(year=year + 1)
    elif parts["day"] is None:
        high = low.replace(year=year + month // 12, month=month % 12 + 1)
    elif parts["hour"] is None:
        high = low + timedelta(days=1)
    elif parts["second"] is None:
        high = low + timedelta(minutes=1)
    elif not fraction:
        high = low + timedelta(seconds=1)
    else:
        high = low + timedelta(milliseconds=1)
    return _ms(low), _ms(high)


def _zone(text: str | None) -> tzinfo:
    if not text or text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
