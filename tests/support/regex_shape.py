"""Does a compiled pattern have a shape that can backtrack without end?

The pattern is parsed with Python's own regex parser; an unbounded repeat (`*`, `+`,
`{n,}`) may neither hold another repeat (nested) nor follow another one with no
character matched between them (adjacent: `.*.*`, `.*?.*`), the two shapes that give
the engine exponentially many ways to try. And at most one unbounded repeat may give
characters back: `^.*A.*B.*C` has literals between its repeats, yet on a miss tries
every place of A times every place of B ... (polynomial of the wildcards' count);
repeats inside an atomic group `(?>...)` or possessive ones never give back.
"""

from __future__ import annotations

from re import _constants as constants  # type: ignore[attr-defined]
from re import _parser as parser  # type: ignore[attr-defined]
from typing import Any

REPEATS = {constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT}
GROUPS = {constants.SUBPATTERN, constants.ATOMIC_GROUP}
# items that take exactly one character: between two repeats they keep them apart
CONSUMING = {constants.LITERAL, constants.NOT_LITERAL, constants.ANY, constants.IN}


def _flat(items: Any, atomic: bool = False) -> list[tuple[Any, Any, bool]]:
    """The pattern as one sequence, groups opened (their content runs in place), each
    item marked when it sits in an atomic group."""
    out: list[tuple[Any, Any, bool]] = []
    for op, arg in items:
        if op == constants.SUBPATTERN:
            out += _flat(arg[-1], atomic)
        elif op == constants.ATOMIC_GROUP:
            out += _flat(arg, True)
        else:
            out.append((op, arg, atomic))
    return out


def _unbounded(op: Any, arg: Any) -> bool:
    return op in REPEATS and arg[1] == constants.MAXREPEAT


def _holds_repeat(items: Any) -> bool:
    for op, arg in items:
        if op in REPEATS or (
            op in GROUPS and _holds_repeat([(o, a) for o, a, _ in _flat([(op, arg)])])
        ):
            return True
        if op == constants.BRANCH and any(_holds_repeat(b) for b in arg[1]):
            return True
    return False


def problems(pattern: str) -> list[str]:
    """What is wrong with the pattern's shape; empty when it cannot backtrack."""
    found: list[str] = []
    since_literal = False  # an unbounded repeat seen, no literal after it yet
    giving_back = 0  # unbounded repeats that may return characters on a miss
    for op, arg, atomic in _flat(parser.parse(pattern)):
        if _unbounded(op, arg):
            if _holds_repeat(arg[2]):
                found.append("nested unbounded repeat")
            if since_literal:
                found.append("adjacent unbounded repeats")
            since_literal = True
            giving_back += not atomic and op != constants.POSSESSIVE_REPEAT
        elif op in CONSUMING:
            since_literal = False
    if giving_back > 1:
        found.append(f"{giving_back} unbounded repeats that give characters back")
    return found
