"""Content negotiation (`Accept`, `_format`) and `_pretty`: JSON only, said clearly."""

from __future__ import annotations

import orjson

from access.errors import AccessError
from fhir_server.body import fragment, loads_stored
from fhir_server.exchange import FhirRequest

JSON_FORMATS = frozenset(
    {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
)
ANY = frozenset({"*/*", "application/*", ""})


def check_acceptable(request: FhirRequest) -> None:
    """Raise 406 when the client accepts only formats this server does not produce."""
    requested = request.param("_format")
    if requested is not None:
        media = requested.split(";")[0].strip().lower().replace(" ", "+")
        if media not in JSON_FORMATS:
            raise AccessError(
                "MB-1015",
                f"_format={requested} is not supported: this server speaks FHIR JSON",
                expression="_format",
            )
        return
    accept = request.header("accept")
    if accept is None:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in JSON_FORMATS or media in ANY or media.endswith("+json"):
            return
    raise AccessError(
        "MB-1015", f"Accept {accept[:100]!r}: this server answers application/fhir+json"
    )


def wants_pretty(request: FhirRequest) -> bool:
    return (request.param("_pretty") or "").lower() == "true"


def pretty(body: bytes) -> bytes:
    # decimals as stored (`1.50` stays `1.50`), see fhir_server/body.py
    return orjson.dumps(loads_stored(body), default=fragment, option=orjson.OPT_INDENT_2)
