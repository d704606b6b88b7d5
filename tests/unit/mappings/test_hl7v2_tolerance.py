"""Tolerance where it is safe: dropped non-key fields, HL7 `""`, MSH-7's offset, and
order PIDs that fill but never overwrite demographics."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import V2Message
from mappings.hl7v2.tolerance import key_fields, tolerated
from mappings.hl7v2.translate import Translation, Upsert, translate
from tests.unit.mappings.test_hl7v2_translate import msh, segment, upserts


def run(text: str, adt_demographics: bool = True) -> Translation:
    return translate(V2Message(text), None, ZoneInfo("Europe/Vilnius"), adt_demographics)


def patient(translation: Translation) -> Upsert:
    [upsert] = upserts(translation, "Patient")
    return upsert


def test_key_fields_are_data_and_name_identifiers() -> None:
    assert {"PID-3", "MSH-9", "ORC-2", "ORC-3", "OBR-3", "MRG-1"} <= key_fields()
    assert not tolerated("PID", 3)
    assert tolerated("PID", 7)
    assert tolerated("PID", 29)


def test_lab_birth_date_with_age_is_dropped_with_a_warning() -> None:
    text = (
        msh("ORU^R01")
        + segment("PID", {1: "1", 3: "MRN1^^^LTPK", 5: "Doe^Jane", 7: "01/10/1948^53 Y"})
        + segment("OBR", {1: "1", 3: "F1^LAB", 4: "GLU^Glucose^L"})
        + segment("OBX", {1: "1", 2: "NM", 3: "GLU^Glucose^L", 5: "5.4", 11: "F"})
    )
    translation = run(text)
    [warning] = translation.warnings
    assert (warning.code, warning.location) == ("102", "PID^2^7")
    assert "birthDate" not in patient(translation).resource
    [observation] = upserts(translation, "Observation")
    assert observation.resource["valueQuantity"]["value"] == 5.4


def test_a_bad_result_value_still_refuses_the_message() -> None:
    text = (
        msh("ORU^R01")
        + segment("PID", {1: "1", 3: "MRN1^^^LTPK"})
        + segment("OBR", {1: "1", 3: "F1^LAB", 4: "GLU^Glucose^L"})
        + segment("OBX", {1: "1", 2: "NM", 3: "GLU^Glucose^L", 5: "five", 11: "F"})
    )
    with pytest.raises(MappingError) as raised:
        run(text)
    assert (raised.value.code, raised.value.location) == ("102", "OBX^4^5")


def test_explicit_null_clears_a_component_and_a_field() -> None:
    text = msh("ADT^A08") + segment(
        "PID", {1: "1", 3: "MRN1^^^LTPK", 5: "Doe^John", 7: '""', 8: "M",
                11: 'Main St 1^^Vilnius^^01100^""'},
    )  # fmt: skip
    resource = patient(run(text)).resource
    address = {"line": ["Main St 1"], "city": "Vilnius", "postalCode": "01100"}
    assert resource["address"] == [address]
    assert resource["birthDate"] is None  # the writer removes it from the stored Patient
    assert resource["gender"] == "male"


def test_null_field_does_not_clear_what_another_field_sets() -> None:
    text = msh("ADT^A08") + segment(
        "PID", {1: "1", 3: "MRN1^^^LTPK", 13: '""', 14: "^WPN^PH^^^^5551234"}
    )
    assert patient(run(text)).resource["telecom"] == [
        {"system": "phone", "value": "5551234", "use": "work"}
    ]


def test_time_without_offset_takes_msh7_offset() -> None:
    header = msh("ADT^A01").replace("20261122101500", "20261122101500-0500")
    text = (
        header
        + segment("PID", {1: "1", 3: "MRN1^^^LTPK"})
        + segment("PV1", {1: "1", 2: "I", 19: "V1^^^VLN^VN", 44: "20261122100000",
                          45: "20261123100000+0100"})
    )  # fmt: skip
    [encounter] = upserts(run(text), "Encounter")
    assert encounter.resource["period"]["start"] == "2026-11-22T10:00:00-05:00"
    assert encounter.resource["period"]["end"] == "2026-11-23T10:00:00+01:00"


def test_time_without_any_offset_takes_the_configured_zone() -> None:
    text = (
        msh("ADT^A01")
        + segment("PID", {1: "1", 3: "MRN1^^^LTPK"})
        + segment("PV1", {1: "1", 2: "I", 19: "V1^^^VLN^VN", 44: "20260715100000"})
    )
    [encounter] = upserts(run(text), "Encounter")
    assert encounter.resource["period"]["start"] == "2026-07-15T10:00:00+03:00"  # Vilnius, summer


def order(pid_name: str) -> str:
    return (
        msh("ORM^O01", "2.3.1")
        + segment("PID", {1: "1", 3: "MRN1^^^LTPK", 5: pid_name})
        + segment("ORC", {1: "NW", 2: "PL1^RIS"})
        + segment("OBR", {1: "1", 2: "PL1^RIS", 4: "71020^Chest X-ray^C4"})
    )


def test_order_pid_only_fills_the_patient_by_default() -> None:
    assert patient(run(order("DOE^JOHN"))).mode == "fill"
    assert patient(run(msh("ADT^A08") + segment("PID", {1: "1", 3: "M^^^LTPK"}))).mode == "upsert"


def test_order_pid_updates_when_configured() -> None:
    assert patient(run(order("DOE^JOHN"), adt_demographics=False)).mode == "upsert"
