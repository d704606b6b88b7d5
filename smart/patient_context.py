"""The patient a user's tokens are confined to, when the user is not a practitioner:
a Patient user is their own context; a RelatedPerson user (a parent, a carer) gets the
patient their RelatedPerson resource names (`RelatedPerson.patient`, FHIR R4: 1..1),
read from the store when they sign in, so the record, not the account, decides.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import orjson

from smart.accounts import Account

if TYPE_CHECKING:
    from fhir_server.repository import Repository

PATIENT_REFERENCE = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})$")


class NoPatientContext(Exception):
    """The user's resource names no patient; the message is safe to show the user."""


async def own_patient(account: Account, repository: Repository) -> str | None:
    """The Patient id the account stands for or is related to; None for a practitioner.
    `NoPatientContext` when a RelatedPerson is missing or names no Patient by a
    relative reference."""
    kind, _, identifier = account.fhir_user.partition("/")
    if kind == "Patient":
        return identifier
    if kind != "RelatedPerson":
        return None
    stored = await repository.read("RelatedPerson", identifier)
    if stored is None or stored.raw is None:
        raise NoPatientContext(f"no {account.fhir_user} on this server")
    try:
        resource = orjson.loads(stored.raw)
        reference = resource["patient"]["reference"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        reference = None
    found = PATIENT_REFERENCE.match(reference) if isinstance(reference, str) else None
    if found is None:
        raise NoPatientContext(f"{account.fhir_user} names no Patient of this server")
    return found.group(1)


def scope_for(account: Account, scope: str) -> str:
    """What a Patient or RelatedPerson account may be granted of `scope`: `user/`
    scopes in their `patient/` form. A user scope is what the user may see, and for such
    a user that is one patient's compartment, never everyone's; so an app asking for
    `user/ImagingStudy.rs` (the image viewer, docs/viewer.md) is confined to the
    patient for them and not for a Practitioner."""
    if account.fhir_user.startswith("Practitioner/"):
        return scope
    return " ".join(
        "patient/" + name.removeprefix("user/") if name.startswith("user/") else name
        for name in scope.split()
    )
