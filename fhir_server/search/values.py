"""The budget of one search parameter, checked before its value is compiled or run.

Every parameter's comma list is bounded (`max_search_values`) and so is each value
(`max_search_value_chars`): a 20,000-value `_id=` or a 20,001-character `:contains` is
refused with a 400 naming the limit instead of being worked through. Control characters
have no meaning in a search value and would reach the index keys' separator, so they are
refused too.
"""

from __future__ import annotations

import re

from access.budget import Budget
from access.errors import AccessError
from fhir_server.search.nodes import invalid

OPAQUE = frozenset({"_page"})  # our own paging token, not a client's value
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_parameter(name: str, value: str, budget: Budget) -> None:
    """Refuse `name=value` when it is over the budget or cannot be a search value."""
    if name in OPAQUE:
        return
    if value.count(",") >= budget.max_search_values:
        # escaped commas ("\,") are counted too: a list that long is refused either way
        raise AccessError(
            "MB-1061",
            f"{name}: more than {budget.max_search_values} comma-separated values "
            "(max_search_values)",
            expression=name,
        )
    longest = max((len(part) for part in value.split(",")), default=0)
    if longest > budget.max_search_value_chars:
        raise AccessError(
            "MB-1060",
            f"{name}: a value of {longest} characters is over {budget.max_search_value_chars} "
            "(max_search_value_chars)",
            expression=name,
        )
    if _CONTROL.search(value) or _CONTROL.search(name):
        raise invalid(name, "control characters are not allowed in a search parameter")
