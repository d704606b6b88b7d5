"""Identifier systems of the Modality Worklist's procedure ids kept on a ServiceRequest.

The HL7 order translation (mappings/hl7v2/tables/segments.yaml) writes them from IPC-2 /
OBR-19 and IPC-4 / OBR-20, the worklist (imaging/dimse/worklist.yaml) reads them back,
and the study link knows they are no accession numbers. The YAML tables spell the same
URIs; tests/unit/mappings/test_worklist_identifiers.py holds them equal.
"""

from __future__ import annotations

REQUESTED_PROCEDURE_ID = "https://medbridge.example.org/dicom/requested-procedure-id"
SCHEDULED_PROCEDURE_STEP_ID = "https://medbridge.example.org/dicom/scheduled-procedure-step-id"
WORKLIST_SYSTEMS = frozenset({REQUESTED_PROCEDURE_ID, SCHEDULED_PROCEDURE_STEP_ID})
