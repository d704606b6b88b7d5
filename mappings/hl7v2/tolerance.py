"""Which fields a data-type error may be tolerated in: the key-field table (data).

A field that identifies nothing is dropped with a warning; a key field keeps the error.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def key_fields() -> frozenset[str]:
    """HL7 field ids (`PID-3`) whose data-type errors keep AE; from key_fields.yaml."""
    text = (resources.files("mappings.hl7v2") / "tables" / "key_fields.yaml").read_text("utf-8")
    return frozenset(str(field) for field in yaml.safe_load(text)["key_fields"])


def tolerated(segment: str, field: int) -> bool:
    """True when a data-type error in SEG-field may drop that field instead of the message."""
    return f"{segment}-{field}" not in key_fields()
