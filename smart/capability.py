"""The CapabilityStatement's `rest.security` of a server that enforces SMART tokens.

`fhirclient` and other SMART clients discover the authorization endpoints only from the
`oauth-uris` extension here (as well as from `.well-known/smart-configuration`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
# the sub-extensions of oauth-uris, in the order the SMART registry lists them
ENDPOINTS = ("authorize", "token", "introspect", "revoke", "register", "manage")


def rest_security(endpoints: Mapping[str, str]) -> dict[str, Any]:
    """`rest.security` naming SMART-on-FHIR and the given endpoint URLs (by the names of
    ENDPOINTS: authorize, token, introspect, revoke ...)."""
    uris = [{"url": name, "valueUri": endpoints[name]} for name in ENDPOINTS if name in endpoints]
    return {
        "extension": [{"url": OAUTH_URIS, "extension": uris}],
        "service": [
            {
                "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}],
                "text": "OAuth2 bearer tokens with SMART-on-FHIR scopes",
            }
        ],
        "description": "Every FHIR and DICOMweb interaction except this statement needs a "
        "bearer access token; scopes are checked per interaction and type, and a "
        "patient-context token sees only its patient's compartment.",
    }
