"""mappings.dicom.reconcile: a study header against its order's Patient."""

from __future__ import annotations

from typing import Any

import pytest

from mappings.dicom.reconcile import mismatches

HOSP = "https://medbridge.example.org/hl7v2/authority/HOSP"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": HOSP, "value": "MRN5005"}],
    "name": [{"family": "Silverheels", "given": ["Jay", "Tonto"]}],
}


@pytest.mark.parametrize(
    ("header", "issuer", "expected"),
    [
        ({"PatientID": "MRN5005", "PatientName": "SILVERHEELS^JAY"}, "HOSP", []),
        ({"PatientID": "MRN5005", "PatientName": "Silverheels^Jay^Tonto"}, None, []),
        ({"PatientID": "", "PatientName": "^^^^"}, None, []),  # names nobody: no quarrel
        (
            {"PatientID": "MRN5005", "PatientName": "=シルバーヒールズ^ジェイ"},
            "HOSP",
            ["patient-name-mismatch"],
        ),
        (
            {"PatientID": "MRN9999", "PatientName": "Silverheels^Jay"},
            "HOSP",
            ["patient-id-mismatch"],
        ),
        ({"PatientID": "MRN5005", "PatientName": "Doe^John"}, "HOSP", ["patient-name-mismatch"]),
        (
            {"PatientID": "MRN5005", "PatientName": "Doe^Jay"},
            "OTHER",
            ["patient-id-mismatch", "patient-name-mismatch"],
        ),
    ],
)
def test_mismatches(header: dict[str, Any], issuer: str | None, expected: list[str]) -> None:
    assert mismatches(header, issuer, PATIENT) == expected


def test_an_unnamed_patient_disagrees_with_no_name() -> None:
    assert mismatches({"PatientName": "Doe^John"}, None, {"resourceType": "Patient"}) == []
