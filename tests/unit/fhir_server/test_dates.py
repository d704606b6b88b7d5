"""FHIR dates become millisecond ranges with their implicit precision."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.search.dates import date_range


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2024", ms(2024, 1, 1), ms(2025, 1, 1)),
        ("2024-03", ms(2024, 3, 1), ms(2024, 4, 1)),
        ("2024-12", ms(2024, 12, 1), ms(2025, 1, 1)),
        ("2024-02-29", ms(2024, 2, 29), ms(2024, 3, 1)),
        ("2024-03-05T10:15", ms(2024, 3, 5, 10, 15), ms(2024, 3, 5, 10, 16)),
        ("2024-03-05T10:15:30Z", ms(2024, 3, 5, 10, 15, 30), ms(2024, 3, 5, 10, 15, 31)),
        ("2024-03-05T12:15:30+02:00", ms(2024, 3, 5, 10, 15, 30), ms(2024, 3, 5, 10, 15, 31)),
    ],
)
def test_ranges(value: str, low: int, high: int) -> None:
    assert date_range(value) == (low, high)


@pytest.mark.parametrize("value", ["", "yesterday", "2024-13", "2023-02-29", "20240305"])
def test_not_dates(value: str) -> None:
    assert date_range(value) is None
