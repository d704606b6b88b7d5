"""Requested scopes in plain words, for the approval page (table: scope_words.json).

Display only: what a scope permits is decided by the enforcement hooks' parser.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z*]+)\.([a-z*]+)(\?.*)?$")


@cache
def _table() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((Path(__file__).parent / "scope_words.json").read_text())
    return loaded


def describe(scope: str) -> str:
    """One line for one scope; the scope itself when it has no wording."""
    table = _table()
    if scope in table["named"]:
        return str(table["named"][scope])
    match = RESOURCE_SCOPE.match(scope)
    if match is None:
        return scope
    context, resource, action, query = match.groups()
    actions = table["actions"]
    if action in actions:
        verbs = str(actions[action])
    elif all(letter in "cruds" for letter in action):
        verbs = ", ".join(str(actions[letter]) for letter in action)
    else:
        return scope
    what = "all records" if resource == "*" else f"{resource} records"
    limit = f" (only where {query[1:]})" if query else ""
    return f"{verbs} {what} {table['context'][context]}{limit}"
