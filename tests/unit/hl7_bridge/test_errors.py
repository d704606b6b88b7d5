"""A refused access rejects an HL7 message as a whole (AR); a fault in its content is AE."""

from __future__ import annotations

from access.errors import AccessError
from hl7_bridge.errors import Hl7Error


def test_a_refused_access_is_ar_with_its_catalog_code_in_the_text() -> None:
    error = Hl7Error.from_fhir(AccessError("MB-4001", "not from this peer"))
    assert error.ack_code == "AR"
    assert error.text.startswith("MB-4001: not from this peer")


def test_a_fault_in_the_content_stays_ae() -> None:
    assert Hl7Error.from_fhir(AccessError("MB-1006")).ack_code == "AE"
    assert Hl7Error.from_fhir(AccessError("MB-1002")).ack_code == "AE"


def test_the_store_failing_is_ar() -> None:
    assert Hl7Error.from_fhir(AccessError("MB-1000")).ack_code == "AR"
