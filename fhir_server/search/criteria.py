"""Conditional-interaction criteria (`identifier=sys|1&family=x`) as search criteria.

They are compiled and run by the same search engine as a search, so conditional
create/update/delete match exactly what `GET [type]?criteria` would find.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

IGNORED = frozenset(
    {"_format", "_pretty", "_summary", "_elements", "_count", "_sort", "_total", "_page"}
)


def parse_criteria(criteria: str) -> list[tuple[str, str]]:
    """`Patient?identifier=a|b` or `identifier=a|b` -> [("identifier", "a|b")]."""
    _, _, query = criteria.rpartition("?")
    return only_criteria(parse_qsl(query, keep_blank_values=True))


def only_criteria(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The parameters that select resources, without result and format parameters."""
    return [(k, v) for k, v in params if k not in IGNORED]
