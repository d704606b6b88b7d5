"""The budget of one request: every count or size an input can name has a cap.

The caps are checked before the work they bound, and each refusal names its limit, so
a client learns which setting stopped it (`MEDBRIDGE_LIMIT_*`, docs/limits.md). One
frozen value is built by the composition root from the settings and handed to every
door; tests build their own.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Budget:
    # FHIR bodies (R4: "strings SHALL NOT exceed 1MB"; BSON documents end at 16 MiB)
    max_string_bytes: int = MiB
    max_resource_bytes: int = 12 * MiB
    max_json_depth: int = 64
    max_list_items: int = 10_000
    max_bundle_entries: int = 2_000
    max_patch_operations: int = 1_000
    # searches and lists named in a URL
    max_search_values: int = 1_000
    max_search_value_chars: int = 1_024
    max_wildcard_chars: int = 256
    max_frames_per_request: int = 1_000
    # multipart (RFC 2046: a boundary has 1 to 70 characters)
    max_multipart_parts: int = 10_000
    max_multipart_boundary: int = 70
    # a response built in memory; larger ones stream or are refused
    max_response_bytes: int = 256 * MiB
    # HTTP connections
    max_header_bytes: int = 64 * 1024
    http_header_timeout: float = 10.0
    http_keepalive_timeout: float = 15.0
