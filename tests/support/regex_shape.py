"""Whether a regular expression can backtrack catastrophically, read from its parse tree.

A pattern whose unbounded repeats are neither nested (`(a*)*`) nor adjacent (`.*.*`,
`a*a*`) matches in time bounded by the subject length times the pattern length; these
are the shapes the hostile-input tests forbid in compiled search patterns.
"""

from __future__ import annotations

import re._constants as constants
import re._parser as parser
from typing import Any

_REPEATS = (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT)


def unbounded_repeat_problems(pattern: str) -> list[str]:
    """Descriptions of nested or adjacent unbounded repeats in `pattern` (empty: none)."""
    problems: list[str] = []
    _walk(parser.parse(pattern), problems, inside_repeat=False)
    return problems


def _is_unbounded(item: tuple[Any, Any]) -> bool:
    op, av = item
    return op in _REPEATS and av[1] == constants.MAXREPEAT


def _walk(sub: Any, problems: list[str], inside_repeat: bool) -> None:
    previous_unbounded = False
    for item in sub:
        op, av = item
        unbounded = _is_unbounded(item)
        if unbounded and inside_repeat:
            problems.append("nested unbounded repeat")
        if unbounded and previous_unbounded:
            problems.append("adjacent unbounded repeats")
        previous_unbounded = unbounded
        if op in _REPEATS:
            _walk(av[2], problems, inside_repeat or unbounded)
        elif op == constants.SUBPATTERN:
            _walk(av[3], problems, inside_repeat)
        elif op == constants.BRANCH:
            for branch in av[1]:
                _walk(branch, problems, inside_repeat)


def unbounded_repeats(pattern: str) -> int:
    """How many unbounded repeats `pattern` has, at any depth."""

    def count(sub: Any) -> int:
        total = 0
        for item in sub:
            op, av = item
            total += _is_unbounded(item)
            if op in _REPEATS:
                total += count(av[2])
            elif op == constants.SUBPATTERN:
                total += count(av[3])
            elif op == constants.BRANCH:
                total += sum(count(branch) for branch in av[1])
        return total

    return count(parser.parse(pattern))
