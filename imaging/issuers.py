"""Which assigning authority a study's PatientID belongs to when its header names none.

IssuerOfPatientID is often left empty by modalities (they copy PatientID from the
worklist and drop the issuer), so the issuer is taken from where the study came from:
the calling AE title's `issuer` in the DICOM peers table, noted here per study before its
first instance is indexed (so the FHIR upkeep never sees the study without it), else
the server's default issuer (MEDBRIDGE_DICOM_DEFAULT_ISSUER, which STOW-RS and imports
get too). The header's own issuer always wins. See docs/dicom.md, "Patient identity".
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pymongo.asynchronous.collection import AsyncCollection

from fhir_server.repository import Repository

ISSUERS = "dicom_study_issuers"
CACHE_LIMIT = 10_000  # studies noted by this process: one write per study, not per instance
HEADER_TAGS = ["StudyInstanceUID", "IssuerOfPatientID"]


class IssuerNotes:
    """Study -> issuer of its calling AE title, kept in MongoDB (first AE wins)."""

    def __init__(self, repository: Repository, default_issuer: str | None = None) -> None:
        self.repository = repository
        self.default_issuer = default_issuer or None
        self.notes: AsyncCollection[dict[str, Any]] = repository.db[ISSUERS]
        self._noted: set[str] = set()
        # whether any study may have a note: unknown until read once, then kept up to date
        # by note() (the DIMSE door writing notes runs in this process), so a site without
        # per-AE issuers pays no read per study
        self._any_notes: bool | None = None

    def study_to_note(self, data: bytes, issuer: str | None) -> str | None:
        """The StudyInstanceUID of a Part 10 instance from an AE whose issuer is `issuer`,
        when that issuer must be noted for it (the header has none, the default differs,
        not noted yet). Reads the header only then: CPU work for the caller's thread."""
        if not issuer or issuer == self.default_issuer:
            return None  # nothing to remember: the default applies anyway
        study, header_issuer = _header(data)
        if not study or header_issuer or study in self._noted:
            return None
        return study

    async def note(self, study: str, issuer: str) -> None:
        """Remember `issuer` for `study` (before its instance is indexed)."""
        async with self.repository.write_gate():
            await self.notes.update_one(
                {"_id": study}, {"$setOnInsert": {"issuer": issuer}}, upsert=True
            )
        if len(self._noted) > CACHE_LIMIT:
            self._noted.clear()
        self._noted.add(study)
        self._any_notes = True

    async def issuer(self, study: dict[str, Any]) -> str | None:
        """The issuer of a study row's PatientID: header, else noted, else the default."""
        header = str(study.get("IssuerOfPatientID") or "").strip()
        if header:
            return header
        if self._any_notes is None:
            self._any_notes = await self.notes.find_one({}, {"_id": 1}) is not None
        if self._any_notes:
            noted = await self.notes.find_one({"_id": study["_id"]})
            if noted and noted.get("issuer"):
                return str(noted["issuer"])
        return self.default_issuer


def _header(data: bytes) -> tuple[str, str]:
    """StudyInstanceUID and IssuerOfPatientID, read without decoding the rest; empty
    strings when unreadable (the ingest then answers with its own failure)."""
    try:
        dataset = dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=HEADER_TAGS)
        return str(dataset.get("StudyInstanceUID", "") or ""), str(
            dataset.get("IssuerOfPatientID", "") or ""
        ).strip()
    except (InvalidDicomError, ValueError, TypeError, EOFError, OSError, AttributeError):
        return "", ""
