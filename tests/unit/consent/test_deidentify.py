"""Rule 7's transform: what research sees of a Patient, a RelatedPerson and the records
that name them (consent/deidentify.py)."""

from __future__ import annotations

from typing import Any

import orjson

from consent.deidentify import PSEUDONYMIZED, deidentified, is_deidentified
from consent.hooks import deidentified_answer
from fhir_server.exchange import FhirResponse

MRN = "http://hospital.example/mrn"
PLACEHOLDER = {"use": "anonymous", "family": "Anonymous"}


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "3", "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"},
        ]},
        "text": {"status": "generated", "div": "<div>Jonas Petraitis</div>"},
        "identifier": [{"system": MRN, "value": "MRN-4711"}],
        "name": [{"family": "Petraitis", "given": ["Jonas"]}],
        "_name": [{"extension": []}],
        "telecom": [{"system": "phone", "value": "+370 600 00000"}],
        "gender": "male",
        "birthDate": "1980-05-01",
        "deceasedDateTime": "2026-01-02T03:04:05Z",
        "address": [{"line": ["Gedimino pr. 1"], "city": "Vilnius", "postalCode": "01103",
                     "state": "Vilniaus apskritis", "country": "LT"}],
        "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo="}],
        "contact": [{"name": {"family": "Petraitiene"}}],
        "communication": [{"language": {"coding": [{"code": "lt"}]}}],
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
             "valueString": "Kazlauskaite"},
            {"url": "http://example.org/research-cohort", "valueString": "A"},
        ],
        "generalPractitioner": [{"reference": "Practitioner/gp", "display": "Dr Gp"}],
        "link": [{"other": {"reference": "Patient/p0", "display": "Jonas P."}, "type": "seealso"}],
    }  # fmt: skip


def observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "identifier": [{"system": "http://lab.example/accession", "value": "ACC-1"}],
        "text": {"status": "generated", "div": "<div>Jonas Petraitis: glucose</div>"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}], "text": "Glucose"},
        "subject": {"reference": "Patient/p1", "display": "Jonas Petraitis",
                    "identifier": {"system": MRN, "value": "MRN-4711"}},
        "performer": [{"reference": "Organization/lab", "display": "City lab"}],
        "effectiveDateTime": "2026-03-01T10:00:00Z",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
        "note": [{"text": "Jonas felt fine"}],
        "contained": [{"resourceType": "Patient", "id": "c", "name": [{"family": "X"}],
                       "identifier": [{"value": "MRN-1"}]}],
    }  # fmt: skip


def test_a_patient_keeps_no_direct_identifier() -> None:
    original = patient()
    shown = deidentified(original)
    assert shown["name"] == [{"use": "anonymous", "family": "Anonymous"}]
    for removed in ("identifier", "telecom", "photo", "contact", "text", "_name"):
        assert removed not in shown, removed
    assert shown["address"] == [{"state": "Vilniaus apskritis", "country": "LT"}]
    assert shown["birthDate"] == "1980"
    assert shown["deceasedDateTime"] == "2026"
    assert shown["extension"] == [{"url": "http://example.org/research-cohort", "valueString": "A"}]
    # what research needs and what is not the patient's identity stays
    assert shown["id"] == "p1"
    assert shown["gender"] == "male"
    assert shown["communication"] == original["communication"]
    assert shown["generalPractitioner"] == original["generalPractitioner"]
    assert shown["link"] == [{"other": {"reference": "Patient/p0"}, "type": "seealso"}]
    text = orjson.dumps(shown).decode()
    for identifying in ("Petraitis", "Jonas", "MRN-4711", "+370", "Gedimino", "01103",
                        "Vilnius\"", "Kazlauskaite", "iVBOR"):  # fmt: skip
        assert identifying not in text, identifying
    # the input is not changed: the stored bytes are the door's, not ours
    assert original == patient()


def test_a_record_keeps_its_link_to_the_patient_but_not_who_they_are() -> None:
    shown = deidentified(observation())
    assert shown["subject"] == {"reference": "Patient/p1"}
    assert "identifier" not in shown
    assert "text" not in shown
    assert "note" not in shown
    assert shown["code"]["text"] == "Glucose"  # a code's text is not a narrative
    assert shown["performer"] == [{"reference": "Organization/lab", "display": "City lab"}]
    assert shown["valueQuantity"] == {"value": 5.4, "unit": "mmol/L"}
    assert shown["effectiveDateTime"] == "2026-03-01T10:00:00Z"
    assert shown["contained"] == [
        {
            "resourceType": "Patient",
            "id": "c",
            "name": [{"use": "anonymous", "family": "Anonymous"}],
        }
    ]


def test_a_related_person_is_a_person_too() -> None:
    shown = deidentified({
        "resourceType": "RelatedPerson", "id": "r1",
        "patient": {"reference": "Patient/p1", "display": "Jonas Petraitis"},
        "name": [{"text": "Ona Petraitiene"}], "telecom": [{"value": "ona@example.org"}],
    })  # fmt: skip
    assert shown["name"] == [{"use": "anonymous", "family": "Anonymous"}]
    assert shown["patient"] == {"reference": "Patient/p1"}
    assert "telecom" not in shown


def test_the_label_is_pseudonymized_once_beside_the_others() -> None:
    shown = deidentified(patient())
    assert is_deidentified(shown)
    assert not is_deidentified(patient())
    security = shown["meta"]["security"]
    assert security[-1] == PSEUDONYMIZED
    assert security[-1]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
    assert security[0]["code"] == "N"
    assert deidentified(shown)["meta"]["security"] == security
    assert shown["meta"]["versionId"] == "3"


def test_an_answer_deidentifies_only_the_resources_named() -> None:
    other = {"resourceType": "Organization", "id": "lab", "name": "City lab",
             "identifier": [{"value": "ORG-1"}]}  # fmt: skip
    bundle = {
        "resourceType": "Bundle", "type": "searchset", "total": 3,
        "entry": [{"resource": patient()}, {"resource": observation()}, {"resource": other}],
    }  # fmt: skip
    answer = FhirResponse(200, orjson.dumps(bundle), {})
    masked = {"Patient/p1", "Observation/o1"}
    shown = orjson.loads(deidentified_answer(answer, masked).body or b"")
    resources = [entry["resource"] for entry in shown["entry"]]
    assert [is_deidentified(r) for r in resources] == [True, True, False]
    assert resources[2] == other
    assert shown["total"] == 3

    read = FhirResponse(200, orjson.dumps(patient()), {})
    assert is_deidentified(orjson.loads(deidentified_answer(read, masked).body or b""))
    not_modified = FhirResponse(304, None, {})
    assert deidentified_answer(not_modified, masked).body is None
