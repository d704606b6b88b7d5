"""DICOM UID checks: only a UID that passes these may ever become part of a storage key."""

from __future__ import annotations

import re

# PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
MAX_UID_LENGTH = 64


def is_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID (so it is safe as a path segment);
    fullmatch, because `$` also matches before a trailing newline."""
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and bool(_UID.fullmatch(value))
    )


def uid_list(value: str) -> list[str]:
    """A QIDO UID list (comma or backslash separated) -> the valid UIDs in it."""
    return [part for part in re.split(r"[,\\]", value) if is_uid(part)]
