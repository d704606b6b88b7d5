"""smart/patient_context.py `scope_for`: a Patient or RelatedPerson account is granted
`user/` scopes in their `patient/` form (an app such as the image viewer asks for
`user/ImagingStudy.rs`; for such a user that must mean their own patient's records)."""

from __future__ import annotations

import pytest

from smart.accounts import Account
from smart.patient_context import scope_for
from smart.scopes import parse_scopes

ASKED = "openid fhirUser user/ImagingStudy.rs user/*.read launch/patient"


@pytest.mark.parametrize("fhir_user", ["Patient/p1", "RelatedPerson/r1"])
def test_patients_and_relatives_get_the_patient_form(fhir_user: str) -> None:
    granted = scope_for(Account("someone", fhir_user), ASKED).split()
    assert granted == [
        "openid", "fhirUser", "patient/ImagingStudy.rs", "patient/*.read", "launch/patient",
    ]  # fmt: skip
    assert not any(name.startswith("user/") for name in granted)
    # and what they parse into is patient-confined only
    assert {p.context for p in parse_scopes(granted).permissions} == {"patient"}


def test_a_practitioner_keeps_user_scopes() -> None:
    assert scope_for(Account("dr", "Practitioner/d1"), ASKED) == ASKED
