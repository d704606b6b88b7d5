"""DICOM wildcard matching (PS3.4 C.2.2.2.4) in time linear in the stored value.

One compile function serves QIDO-RS, C-FIND and the Modality Worklist. A value is
normalised first (each run of `*` and `?` becomes its `?`s followed by one `*`, so
`*?*?` is `??*`), which leaves every segment after a `*` starting with a literal
character. Then:

- `regex()` is the MongoDB `$regex`: the literal prefix is anchored, and each segment
  between two `*` is found at its leftmost place inside an atomic group
  (`(?>.*?SEG)`), which is where a glob match may always take it, so the engine never
  returns to try another place. Without the atomic groups `*A*B*...` backtracks
  through every combination of places (issue 17, C2).
- `matches()` does the same walk with `str.find`, no regex at all (the worklist's
  records, which are matched in memory).

Values over `Budget.max_wildcard_chars` are refused before any pattern is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from access.errors import AccessError

WILDCARDS = frozenset("*?")
LIMIT_NAME = "MEDBRIDGE_LIMIT_WILDCARD_CHARS"


def has_wildcards(value: str) -> bool:
    return "*" in value or "?" in value


def normalise(value: str) -> str:
    """Each run of wildcards as its `?`s then at most one `*` (same set of matches)."""
    out: list[str] = []
    singles, star = 0, False
    for char in value:
        if char in WILDCARDS:
            singles += char == "?"
            star = star or char == "*"
            continue
        if singles or star:
            out.append("?" * singles + ("*" if star else ""))
            singles, star = 0, False
        out.append(char)
    out.append("?" * singles + ("*" if star else ""))
    return "".join(out)


def _segment_regex(segment: str) -> str:
    return "".join("." if char == "?" else re.escape(char) for char in segment)


def _segment_at(value: str, start: int, segment: str) -> bool:
    """Does `segment` (literals and `?`) match `value` at `start`?"""
    if start < 0 or start + len(segment) > len(value):
        return False
    return all(s == "?" or s == v for s, v in zip(segment, value[start:], strict=False))


def _find_segment(value: str, segment: str, start: int, stop: int) -> int:
    """The leftmost place in value[start:stop] where `segment` matches, or -1."""
    if "?" not in segment:
        return value.find(segment, start, stop)
    first = segment[0]  # a literal: segments after a `*` start with one (see normalise)
    place = value.find(first, start, stop)
    while place != -1 and place + len(segment) <= stop:
        if _segment_at(value, place, segment):
            return place
        place = value.find(first, place + 1, stop)
    return -1


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A compiled wildcard value: the text between its `*`s, literals and `?`s."""

    segments: tuple[str, ...]

    @property
    def prefix(self) -> str:
        """The literal start every match shares (an index range can serve it)."""
        head = self.segments[0]
        return head[: head.index("?")] if "?" in head else head

    def regex(self) -> str:
        """A Python/PCRE pattern for the whole value, without backtracking between
        segments."""
        head, *rest = self.segments
        return "(?s)^" + _segment_regex(head) + self._after_head(rest)

    def component_regex(self, separators: str) -> str:
        """The value matched from the start of any component (the start, or after one of
        `separators`), its end open: fuzzy person-name matching. The first segment is
        also taken at its leftmost place, atomically, so a stored value with many
        component starts is still walked once."""
        head, *rest = self.segments
        start = f"(?<![^{re.escape(separators)}])"
        open_end = rest if rest and not rest[-1] else [*rest, ""]
        return f"(?s)^(?>.*?{start}{_segment_regex(head)})" + self._after_head(open_end)

    @staticmethod
    def _after_head(rest: list[str]) -> str:
        if not rest:
            return r"\Z"
        *middle, last = rest
        text = "".join(f"(?>.*?{_segment_regex(segment)})" for segment in middle)
        if last:
            text += ".*" + _segment_regex(last) + r"\Z"
        return text

    def matches(self, value: str) -> bool:
        """The same answer as `regex()`, by a left-to-right walk with `str.find`."""
        head, *rest = self.segments
        if not rest:
            return len(value) == len(head) and _segment_at(value, 0, head)
        *middle, last = rest
        stop = len(value) - len(last)
        if stop < len(head) or not _segment_at(value, 0, head):
            return False
        place = len(head)
        for segment in middle:
            found = _find_segment(value, segment, place, stop)
            if found < 0:
                return False
            place = found + len(segment)
        return _segment_at(value, stop, last)


def compile_wildcard(value: str, max_chars: int) -> Wildcard:
    """`value` (PS3.4 wildcard text) compiled; over `max_chars` is refused (400/A700)."""
    if len(value) > max_chars:
        raise AccessError(
            "MB-3041",
            f"a wildcard matching value may hold at most {max_chars} characters "
            f"({LIMIT_NAME}); this one has {len(value)}",
        )
    return Wildcard(tuple(normalise(value).split("*")))
