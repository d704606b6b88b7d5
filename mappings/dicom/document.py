"""DICOM Encapsulated PDF instance -> the FHIR DocumentReference a portal lists.

The PDF stays in the archive: the attachment points at the instance's Encapsulated
Document (0042,0011) through WADO-RS bulk data, so there is one copy of the bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_DOCUMENT = "00420011"
DOCUMENT_KINDS = {ENCAPSULATED_PDF: "application/pdf"}  # SOP Class UID -> contentType


def document_id(sop: str) -> str:
    """One DocumentReference per instance, a FHIR id (64 characters at most) from its UID."""
    return "dicom-doc-" + hashlib.sha256(sop.encode()).hexdigest()[:40]


def document_reference(
    instance: dict[str, Any], study: str, series: str, subject: str, dicomweb_base: str
) -> dict[str, Any]:
    """The DocumentReference of one encapsulated document instance (an index row)."""
    sop = str(instance["_id"])
    url = (
        f"{dicomweb_base}/studies/{study}/series/{series}/instances/{sop}"
        f"/bulkdata/{ENCAPSULATED_DOCUMENT}"
    )
    attachment: dict[str, Any] = {
        "contentType": DOCUMENT_KINDS[str(instance["SOPClassUID"])],
        "url": url,
    }
    return {
        "resourceType": "DocumentReference",
        "id": document_id(sop),
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{sop}"}],
        "status": "current",
        "subject": {"reference": subject},
        "content": [{"attachment": attachment}],
        "context": {"related": [{"reference": f"ImagingStudy/{study}"}]},
    }
